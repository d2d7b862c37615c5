"""The gateway's dashboard forms: how the Keys, Providers, Policies and Routing pages read
their POST bodies. A form reads the text; the service it hands the values to checks them
(the same service REST, the admin, apply_config and the commands call). The provider form is
generated from the provider-kind registry (dataplane/provider_kinds.py): a fieldset per
kind, of which only the chosen kind's is read."""

import re
from urllib.parse import urlsplit, urlunsplit

from django import forms

from core import smart, strategies
from core.form_input import NameListField, OrgForm, OrgRowField, WholeNumberField
from core.text import split_csv
from governance.models import RoutingPolicy
from orgs.models import Team

from . import services
from .dataplane import provider_kinds
from .dataplane.provider_kinds import CREDENTIALS, ENDPOINT, SETTINGS
from .models import ProviderConnection

_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", re.ASCII)


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


class DeploymentEditForm(DeploymentForm):
    """A deployment's every field (the Edit page): failover priority, weight, prices, and
    whether it serves. Prices are read exactly by deployment_save, as for every way in."""

    priority = WholeNumberField(label="Priority", minimum=0, maximum=2_147_483_647, required=True)
    weight = WholeNumberField(label="Weight", minimum=0, maximum=2_147_483_647, required=True)
    input_price_per_mtok = forms.CharField(label="Input price", required=False, max_length=40)
    output_price_per_mtok = forms.CharField(label="Output price", required=False, max_length=40)
    unit_price = forms.CharField(label="Unit price", required=False, max_length=40)
    timeout_s = WholeNumberField(label="Timeout (s)", minimum=1, maximum=2_147_483_647)
    is_active = forms.BooleanField(label="Active", required=False)

    def clean_input_price_per_mtok(self):
        return self.cleaned_data["input_price_per_mtok"] or None

    def clean_output_price_per_mtok(self):
        return self.cleaned_data["output_price_per_mtok"] or None

    def clean_unit_price(self):
        return self.cleaned_data["unit_price"] or None


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


# A threshold as the page writes it (views.plain_decimal): any double in (0, 1], the
# smallest (5e-324) 343 characters long, so a policy saved over REST with one saves from
# its Edit page unchanged (each entry was at most 200 characters).
THRESHOLD_CHARS = 350


def _typed_thresholds(text: str) -> list[float] | None:
    """Thresholds as the box holds them, or None if they do not read as decimals."""
    parts = split_csv(text or "")
    if not all(_DECIMAL.fullmatch(p) for p in parts):
        return None
    return [float(p) for p in parts]


def slider_or_thresholds(data: dict) -> dict:
    """``{"thresholds": …}`` or ``{"aggressiveness": …}`` from a smart form's slider and
    thresholds box: typed thresholds decide, unless the page showed them (thresholds set
    by hand before), they were left as shown and the slider was moved from where the page
    put it: then the slider decides and the thresholds are cleared (what a user moving
    it expects). ``aggressiveness_shown``/``thresholds_shown``: the page's hidden fields."""
    thresholds, slider = data.get("thresholds"), data.get("aggressiveness")
    shown_slider = (data.get("aggressiveness_shown") or "").strip()
    if (
        thresholds
        and slider is not None
        and shown_slider.isascii()
        and shown_slider.isdigit()
        and slider != int(shown_slider)
        and thresholds == _typed_thresholds(data.get("thresholds_shown") or "")
    ):
        thresholds = None
    if thresholds:
        return {"thresholds": thresholds}
    if slider is not None:
        return {"aggressiveness": slider / 100}
    return {}


class RoutingPolicyForm(forms.Form):
    """A routing policy, new or updated by name (the service checks the strategy)."""

    name = forms.CharField(label="Name", max_length=63)
    strategy = forms.CharField(label="Strategy", required=False, empty_value=strategies.DEFAULT)
    models = NameListField(label="Models", required=True)
    weights = NameListField(label="Weights", required=False)
    # Smart routing (the models are its tiers, cheapest first); the service checks them.
    classifier = forms.ChoiceField(
        label="Classifier", choices=list(smart.CLASSIFIERS.items()), required=False
    )
    aggressiveness = WholeNumberField(
        label="Aggressiveness", minimum=0, maximum=100, empty_value=None
    )
    thresholds = NameListField(label="Thresholds", required=False, max_item_length=THRESHOLD_CHARS)
    ab_share = WholeNumberField(label="A/B share (%)", minimum=0, maximum=100, empty_value=0)
    ab_classifier = forms.ChoiceField(
        label="A/B arm", choices=[("", "—"), *((a, a) for a in smart.AB_ARMS)], required=False
    )
    # Where the page put the slider and what thresholds it showed (slider_or_thresholds).
    aggressiveness_shown = forms.CharField(required=False, max_length=10)
    thresholds_shown = forms.CharField(required=False, max_length=THRESHOLD_CHARS * 11)

    SMART_FIELDS = (
        "classifier",
        "aggressiveness",
        "thresholds",
        "ab_share",
        "ab_classifier",
        "aggressiveness_shown",
        "thresholds_shown",
    )

    def clean_thresholds(self):
        out = []
        for part in self.cleaned_data["thresholds"]:
            # Written as a decimal in ASCII digits: float() also reads "٠.٥", "1e-1", "nan".
            if not _DECIMAL.fullmatch(part):
                raise forms.ValidationError(
                    f"a threshold is a number from 0 to 1, not {part[:40]!r}."
                )
            out.append(float(part))
        return out

    def clean(self):
        """The smart fields become the service's ``smart`` settings (strategy smart only)."""
        data = super().clean()
        fields = {name: data.pop(name, None) for name in self.SMART_FIELDS}
        spec = {}
        if data.get("strategy") == "smart":
            spec["classifier"] = fields["classifier"] or "rules"
            spec.update(slider_or_thresholds(fields))
            if fields["ab_share"]:
                spec["ab"] = {
                    "share": fields["ab_share"] / 100,
                    "classifier": fields["ab_classifier"],
                }
        data["smart"] = spec
        return data

    def clean_weights(self):
        """ "model-a=90, model-b=10" -> {model: "90"}; the service checks the numbers."""
        out = {}
        for part in self.cleaned_data["weights"]:
            model, sep, weight = part.rpartition("=")
            if not sep or not model.strip():
                raise forms.ValidationError(f"write each one as model=weight, not {part!r}.")
            out[model.strip()] = weight.strip()
        return out


class CorsForm(forms.Form):
    """The origins whose browser pages may call /v1 with the org's keys (the service
    checks and normalises each)."""

    cors_origins = NameListField(label="Allowed origins", max_item_length=300)

    def clean(self):
        return {"cors_origins": super().clean().get("cors_origins") or []}


class RoutingPolicyEditForm(RoutingPolicyForm):
    """An existing routing policy: everything but its name (rt- keys show it), and whether
    it serves (a disabled policy's rt- keys are refused until it is enabled again)."""

    is_active = forms.BooleanField(label="Active", required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["name"]


class OrgSmartForm(forms.Form):
    """The org's default smart routing (bn- keys asking for the alias); the service checks it."""

    smart_tiers = NameListField(label="Tiers", required=False)
    # Empty is refused by the service, as over REST (it read as "auto" and was saved so).
    auto_model_alias = forms.CharField(label="Alias", max_length=100, required=False)
    classifier = forms.ChoiceField(
        label="Classifier", choices=list(smart.CLASSIFIERS.items()), required=False
    )
    aggressiveness = WholeNumberField(label="Aggressiveness", minimum=0, maximum=100)
    thresholds = NameListField(label="Thresholds", required=False, max_item_length=THRESHOLD_CHARS)
    aggressiveness_shown = forms.CharField(required=False, max_length=10)
    thresholds_shown = forms.CharField(required=False, max_length=THRESHOLD_CHARS * 11)

    clean_thresholds = RoutingPolicyForm.clean_thresholds

    def clean(self):
        data = super().clean()
        spec = {}
        if data.get("smart_tiers"):
            spec["classifier"] = data.get("classifier") or "rules"
            spec.update(slider_or_thresholds(data))
        out = {"smart_tiers": data.get("smart_tiers") or [], "smart": spec}
        if "auto_model_alias" in self.data:  # not sent: kept, as REST keeps what it omits
            out["auto_model_alias"] = data.get("auto_model_alias") or ""
        return out


# ------------------------------------------------------------------------------ providers
MAX_VALUE_LENGTH = {"textarea": 20_000}  # a service-account key is a few KB
DEFAULT_MAX_VALUE_LENGTH = 2_000


class _WriteOnly:
    """A widget that never renders its value: a credential typed or pasted is not sent back."""

    def format_value(self, value):
        return None


class SecretTextInput(_WriteOnly, forms.TextInput):
    pass


class SecretTextarea(_WriteOnly, forms.Textarea):
    pass


class EndpointInput(forms.URLInput):
    """An endpoint, sent back to a form that failed without any user:password@ in it
    (such a URL is refused, and the password must not come back in the page)."""

    def format_value(self, value):
        value = super().format_value(value)
        if not value or "@" not in value:
            return value
        try:
            parts = urlsplit(value)
            return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        except ValueError:
            return None


def _widget(field: provider_kinds.Field, *, stored: bool) -> forms.Widget:
    placeholder = (
        "stored — leave blank to keep"
        if stored
        else field.placeholder or ("write-only" if field.secret else "")
    )
    attrs = {"placeholder": placeholder} if placeholder else {}
    if field.secret:
        attrs["autocomplete"] = "off"
    if field.input == "textarea":
        return (SecretTextarea if field.secret else forms.Textarea)(attrs={"rows": 4, **attrs})
    if field.input == "password":
        return forms.PasswordInput(attrs=attrs, render_value=False)
    if field.secret:  # every credential is write-only, even an access key id
        return SecretTextInput(attrs=attrs)
    if field.input == "url":
        return EndpointInput(attrs=attrs)
    return forms.TextInput(attrs=attrs)


class ProviderForm(forms.Form):
    """New provider (``provider=None``: a name, a kind and every kind's fieldset) or an
    existing one (its kind's fieldset, its non-secret values filled in, its secrets never:
    a secret left blank keeps the stored one)."""

    name = forms.SlugField(
        max_length=63,
        label="Name",
        widget=forms.TextInput(attrs={"placeholder": "azure-east", "pattern": r"[a-zA-Z0-9_\-]+"}),
    )
    kind = forms.ChoiceField(choices=provider_kinds.choices, label="Kind")
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(self, data=None, *, provider=None):
        self.provider = provider
        self.stored = set(provider.readable_credentials()) if provider else set()
        initial = {}
        if provider is not None:
            initial = {"is_active": provider.is_active}
            spec = provider_kinds.get(provider.kind)
            for f in spec.fields if spec else ():
                if f.store == ENDPOINT:
                    initial[self.input_name(spec, f)] = provider.api_base
                elif f.store == SETTINGS:
                    initial[self.input_name(spec, f)] = (provider.settings or {}).get(f.name, "")
        super().__init__(data, initial=initial)
        if provider is not None:
            del self.fields["name"], self.fields["kind"]  # neither changes once saved
        else:
            del self.fields["is_active"]
        for spec in self.kinds():
            for f in spec.fields:
                stored = f.secret and f.name in self.stored
                self.fields[self.input_name(spec, f)] = forms.CharField(
                    label=f.label,
                    required=False,
                    strip=True,
                    max_length=MAX_VALUE_LENGTH.get(f.input, DEFAULT_MAX_VALUE_LENGTH),
                    help_text=f.help,
                    widget=_widget(f, stored=stored),
                )

    @staticmethod
    def input_name(spec: provider_kinds.ProviderKind, field: provider_kinds.Field) -> str:
        return f"{spec.name}-{field.name}"

    def kinds(self) -> list[provider_kinds.ProviderKind]:
        """The kinds whose fieldsets this form shows."""
        if self.provider is not None:
            spec = provider_kinds.get(self.provider.kind)
            return [spec] if spec else []
        return list(provider_kinds.KINDS.values())

    def chosen_kind(self) -> str:
        if self.provider is not None:
            return self.provider.kind
        chosen = self.data.get("kind") if self.is_bound else None
        return chosen if provider_kinds.get(chosen) else next(iter(provider_kinds.KINDS))

    def sections(self) -> list[dict]:
        """For the template: per kind, its entry, whether it is the chosen one, and its
        fields (registry entry, bound field, whether a secret is stored)."""
        chosen = self.chosen_kind()
        return [
            {
                "kind": spec,
                "checked": spec.name == chosen,
                "fields": [
                    {
                        "spec": f,
                        "bound": self[self.input_name(spec, f)],
                        "stored": f.secret and f.name in self.stored,
                    }
                    for f in spec.fields
                ],
            }
            for spec in self.kinds()
        ]

    def save_arguments(self) -> dict:
        """provider_save's arguments from the chosen kind's fields (after is_valid())."""
        data = self.cleaned_data
        kind = self.provider.kind if self.provider is not None else data["kind"]
        spec = provider_kinds.get(kind)
        values = {f.name: data.get(self.input_name(spec, f), "") for f in spec.fields}
        secrets = {f.name: values[f.name] for f in spec.fields_in(CREDENTIALS) if values[f.name]}
        if self.provider is not None:
            stored = self.provider.readable_credentials()
            # A secret left blank keeps the stored one; none typed keeps them all. A new
            # endpoint gets only what is typed now (provider_save refuses it with none).
            moved = values.get("api_base", "").rstrip("/") != self.provider.api_base.rstrip("/")
            credentials = (secrets if moved else {**stored, **secrets}) if secrets else None
        else:
            credentials = secrets
        return {
            "name": self.provider.name if self.provider is not None else data["name"],
            "kind": kind,
            "api_base": values.get("api_base", ""),
            "settings": {
                f.name: values[f.name] for f in spec.fields_in(SETTINGS) if values[f.name]
            },
            "credentials": credentials,
            "is_active": data["is_active"] if self.provider is not None else True,
        }
