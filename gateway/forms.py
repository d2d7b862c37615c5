"""The gateway's dashboard forms: how the Keys, Providers, Policies and Routing pages read
their POST bodies. A form reads the text; the service it hands the values to checks them
(the same service REST, the admin, apply_config and the commands call)."""

from django import forms

from core import strategies
from core.form_input import NameListField, OrgForm, OrgRowField, WholeNumberField
from governance.models import RoutingPolicy
from orgs.models import Team

from . import services
from .models import ProviderConnection


class KeyExpiryField(forms.Field):
    """A key's expiry, read by services.key_expiry like every other way in: a date alone
    is the end of that day (23:59:59 UTC)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", services.KEY_EXPIRY_HELP)
        super().__init__(**kwargs)

    def to_python(self, value):
        return services.key_expiry(value)


class ApiKeyForm(OrgForm):
    # The name is checked (control characters, NUL included) and defaulted by
    # api_key_create, as for every way in.
    name = forms.Field(required=False)
    allowed_models = NameListField(label="Allowed models", max_item_length=200)
    allowed_providers = NameListField(label="Allowed providers", max_item_length=100)
    team = OrgRowField(Team, label="Team")
    routing_policy = OrgRowField(RoutingPolicy, label="Routing policy")
    rpm_limit = WholeNumberField(label="Requests per minute", minimum=1)
    tpm_limit = WholeNumberField(label="Tokens per minute", minimum=1)
    expires_at = KeyExpiryField(label="Expires on")


class DeploymentForm(OrgForm):
    provider = OrgRowField(ProviderConnection, label="Provider", required=True)
    model_name = forms.CharField(label="Model name", max_length=200)
    upstream_model = forms.CharField(label="Upstream model", max_length=200)
    region = forms.CharField(label="Region", max_length=50, required=False)


class PolicyForm(forms.Form):
    """The whole policy: a list left empty allows everything (or denies nothing)."""

    allowed_models = NameListField(label="Allowed models")
    denied_models = NameListField(label="Denied models")
    allowed_providers = NameListField(label="Allowed providers")
    denied_providers = NameListField(label="Denied providers")
    allowed_regions = NameListField(label="Allowed regions")
    # Money is read exactly (10.1 is 10.10) by policy_set, for every way in.
    monthly_spend_cap_usd = forms.CharField(label="Monthly spend cap", required=False)
    default_max_tokens_estimate = WholeNumberField(
        label="Default max tokens estimate", minimum=1, empty_value=1024
    )

    def clean_monthly_spend_cap_usd(self):
        return self.cleaned_data["monthly_spend_cap_usd"] or None


class RoutingPolicyForm(forms.Form):
    """A routing policy, new or updated by name (the service checks the strategy)."""

    name = forms.CharField(label="Name", max_length=63)
    strategy = forms.CharField(label="Strategy", required=False, empty_value=strategies.DEFAULT)
    models = NameListField(label="Models", required=True)
    weights = NameListField(label="Weights", required=False)

    def clean_weights(self):
        """ "model-a=90, model-b=10" -> {model: "90"}; the service checks the numbers."""
        out = {}
        for part in self.cleaned_data["weights"]:
            model, sep, weight = part.rpartition("=")
            if not sep or not model.strip():
                raise forms.ValidationError(f"write each one as model=weight, not {part!r}.")
            out[model.strip()] = weight.strip()
        return out
