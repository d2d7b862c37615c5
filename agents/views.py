"""Dashboard pages: Settings → Deployment mode, and the Agents page."""

from functools import cache

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render

from core import show_once
from orgs.audit import Actor
from orgs.models import Organization
from orgs.permissions import org_view
from orgs.services import org_vpc_only_set

from . import selectors, services
from .models import OrgAgentState, OrgToken

SNIPPETS = {"compose": "compose.yaml", "helm": "helm.sh", "terraform": "terraform.tf"}


@cache
def _snippet_texts() -> dict[str, str]:
    """deploy/snippets: the files `make deploy-check` validates against the real Compose
    file, Helm chart and Terraform modules (shipped in the platform image)."""
    folder = settings.BASE_DIR / "deploy" / "snippets"
    return {name: (folder / file).read_text() for name, file in SNIPPETS.items()}


def deploy_snippets(control_plane_url: str, org_token: str) -> dict[str, str]:
    """The snippets filled in with this org's control-plane URL and, right after it is made,
    its token (shown once; a placeholder otherwise)."""
    return {
        name: text.replace("{{ control_plane_url }}", control_plane_url).replace(
            "{{ org_token }}", org_token or "bt-…"
        )
        for name, text in _snippet_texts().items()
    }


def _deployment_page(request, new_token: str = ""):
    org = request.org
    org.refresh_from_db()  # an action may just have changed its mode
    state = OrgAgentState.objects.filter(org=org).first()
    control_plane = request.build_absolute_uri("/").rstrip("/")
    response = render(
        request,
        "agents/deployment.html",
        {
            "section": "settings",
            "vpc": org.deployment_mode == Organization.DeploymentMode.VPC,
            "vpc_only": org.vpc_only,
            "tokens": OrgToken.objects.for_org(org).usable(),
            "new_token": new_token,
            "webhook_set": bool(state and state.alert_webhook_url),
            "control_plane": control_plane,
            "snippets": deploy_snippets(control_plane, new_token),
        },
    )
    if new_token:  # shown once: never kept by a browser or proxy cache
        response["Cache-Control"] = "no-store"
    return response


@org_view(write_role="admin")
def deployment(request):
    """Shared gateway or VPC agent; in VPC mode the token, its rotation and deploy snippets."""
    if request.method == "POST":
        return _deployment_action(request)
    # A token just made (enabled or rotated) is shown on the first GET after the POST, once:
    # a reload shows the page without it, and rotates or enables nothing.
    return _deployment_page(request, show_once.take(request, "org_token", request.org.id) or "")


def _deployment_action(request):
    actor, org = Actor.from_request(request), request.org
    action = request.POST.get("action", "")
    try:
        if action in ("enable", "rotate"):
            if action == "enable":
                raw = services.vpc_enable(actor=actor, org=org)
            else:
                _token, raw = services.org_token_rotate(actor=actor, org=org)
            show_once.keep(request, "org_token", org.id, raw)
        elif action == "revoke":
            services.org_token_revoke(actor=actor, org=org)
            messages.success(request, "Org token revoked: the agents' calls now get 401.")
        elif action == "disable":
            services.vpc_disable(actor=actor, org=org)
            messages.success(request, "Back to the shared gateway; the org tokens are revoked.")
        elif action == "vpc_only":
            on = request.POST.get("vpc_only") == "on"
            org_vpc_only_set(actor=actor, org=org, vpc_only=on)
            messages.success(
                request,
                "The shared gateway now refuses this organization's keys: only your agents "
                "serve them."
                if on
                else "The shared gateway serves this organization's keys again.",
            )
        elif action == "alerts":
            services.agent_alerts_set(
                actor=actor, org=org, webhook_url=request.POST.get("webhook_url", "")
            )
            messages.success(request, "Alert settings saved.")
        else:
            messages.error(request, "Unknown action.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("deployment", org_slug=org.slug)


@org_view()
def agents(request):
    return render(
        request,
        "agents/agents.html",
        {
            "section": "agents",
            "vpc": request.org.deployment_mode == Organization.DeploymentMode.VPC,
            "rows": selectors.org_agents(request.org),
            "status": selectors.org_agent_status(request.org),
        },
    )
