"""Every stored name the names rule (core.text.name_checked; docs/security.md, "Names")
governs, in one registry: what ``manage.py check_names`` reads to find names saved before
the rule (a bidi override, a zero-width space, a control character) and, with ``--fix``,
rewrites in their safe form (each refused character written as its escape, as
core.text.name_safe does).

A new name field belongs here as well as in its service's name_checked call:
governance/tests/test_check_names.py fails on a model field that looks like a name and is in
neither NAME_FIELDS nor NOT_NAMES."""

from dataclasses import dataclass

from django.apps import apps

TEXT, LIST, KEYWORDS = "text", "list", "keywords"


@dataclass(frozen=True)
class NameField:
    model: str  # app_label.ModelName
    field: str
    kind: str  # TEXT: a CharField; LIST: a JSON list of names; KEYWORDS: a smart spec's
    entity: str  # the audit rows' entity (api_key.update, team.update, ...)

    @property
    def model_class(self):
        return apps.get_model(self.model)


NAME_FIELDS = (
    NameField("orgs.Organization", "name", TEXT, "org"),
    NameField("orgs.User", "name", TEXT, "user"),
    NameField("orgs.Team", "name", TEXT, "team"),
    NameField("orgs.Team", "description", TEXT, "team"),
    NameField("orgs.PersonalAccessToken", "name", TEXT, "token"),
    NameField("gateway.ApiKey", "name", TEXT, "api_key"),
    NameField("gateway.ApiKey", "allowed_models", LIST, "api_key"),
    NameField("gateway.ApiKey", "allowed_providers", LIST, "api_key"),
    NameField("gateway.ProviderConnection", "name", TEXT, "provider"),
    NameField("gateway.Deployment", "model_name", TEXT, "deployment"),
    NameField("gateway.Deployment", "upstream_model", TEXT, "deployment"),
    NameField("gateway.Deployment", "region", TEXT, "deployment"),
    NameField("gateway.GatewayConfig", "smart_tiers", LIST, "gateway_config"),
    NameField("gateway.GatewayConfig", "auto_model_alias", TEXT, "gateway_config"),
    NameField("gateway.GatewayConfig", "fallback_models", LIST, "gateway_config"),
    NameField("gateway.GatewayConfig", "enabled_providers", LIST, "gateway_config"),
    NameField("gateway.GatewayConfig", "smart", KEYWORDS, "gateway_config"),
    NameField("governance.Policy", "allowed_models", LIST, "policy"),
    NameField("governance.Policy", "denied_models", LIST, "policy"),
    NameField("governance.Policy", "allowed_providers", LIST, "policy"),
    NameField("governance.Policy", "denied_providers", LIST, "policy"),
    NameField("governance.Policy", "allowed_regions", LIST, "policy"),
    NameField("governance.RoutingPolicy", "name", TEXT, "routing_policy"),
    NameField("governance.RoutingPolicy", "model_names", LIST, "routing_policy"),
    NameField("governance.RoutingPolicy", "smart", KEYWORDS, "routing_policy"),
)

# Fields that look like names (by their column's name) but are not set by people under the
# rule: what Bonito writes itself, or text other rules govern.
NOT_NAMES = frozenset(
    {
        "agents.Agent.hostname",  # the agent's own report, stored escaped (agents/api.py)
        "billing.UsageRecord.model_requested",  # a client's text, stored escaped (usage_writer)
        "billing.UsageRecord.model_used",  # a deployment's model_name, checked there
        "billing.UsageRecord.routing_policy",
        "billing.UsageRollup.model",
        "billing.UsageRollup.model_requested",
        "gateway.ModelCatalogEntry.name",  # LiteLLM's catalogue, not a person's
        "orgs.AuditLog.actor_label",
        "orgs.AuditLog.target_repr",
    }
)
