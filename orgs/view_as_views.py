"""Starting and stopping a platform admin's read-only view of an org (orgs.view_as)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from .audit import Actor
from .models import Organization
from .view_as import may_view_as, view_as_start, view_as_stop


@require_POST
@login_required
def start(request, org_slug):
    if not may_view_as(request.user):
        raise Http404("No such page.")
    org = get_object_or_404(Organization, slug=org_slug)
    view_as_start(actor=Actor.from_request(request, via="admin"), session=request.session, org=org)
    return redirect("overview", org_slug=org.slug)


@require_POST
@login_required
def stop(request):
    org = view_as_stop(actor=Actor.from_request(request, via="admin"), session=request.session)
    if org is not None:
        messages.success(request, f"Stopped viewing {org.name}.")
    if org is not None and may_view_as(request.user):
        return redirect(reverse("admin:orgs_organization_change", args=[org.pk]))
    return redirect("home")
