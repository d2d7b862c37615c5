from orgs.models import Organization

from .selectors import org_agent_status


def agent_status(request):
    """The header's agent indicator, for a VPC org's pages only."""
    membership = getattr(request, "membership", None)
    if membership is None or membership.org.deployment_mode != Organization.DeploymentMode.VPC:
        return {}
    return {"agent_status": org_agent_status(membership.org)}
