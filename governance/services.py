"""Writes to org policies and routing policies. Each one audits itself and bumps the
config version so every gateway worker enforces the change within seconds."""

import unicodedata

from django.core.exceptions import ValidationError
from django.db import transaction

from core import smart, strategies
from core.numbers import money, whole
from core.smart import MAX_TIER_NAME
from core.text import (
    distinct_checked,
    look_alike,
    name_checked,
    name_key,
    names_checked,
    shown,
)
from orgs.audit import Actor, record_config_change, record_config_delete

from .models import Policy, RoutingPolicy

POLICY_FIELDS = (
    "allowed_models",
    "denied_models",
    "allowed_providers",
    "denied_providers",
    "allowed_regions",
    "monthly_spend_cap_usd",
    "default_max_tokens_estimate",
)


def _policy_summary(p: Policy) -> dict:
    out = {f: getattr(p, f) for f in POLICY_FIELDS}
    cap = out["monthly_spend_cap_usd"]
    out["monthly_spend_cap_usd"] = str(cap) if cap is not None else None
    return out


@transaction.atomic
def policy_set(*, actor: Actor, org, **fields) -> Policy:
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown policy field(s): {', '.join(sorted(unknown))}.")
    for name in (
        "allowed_models",
        "denied_models",
        "allowed_providers",
        "denied_providers",
        "allowed_regions",
    ):
        if name in fields:
            # The names of models, providers and regions, as every other way of naming
            # them (core.text): a denied "café" typed as e + U+0301 still denies "café".
            fields[name] = sorted(set(names_checked(fields[name] or [], name)))
    if "monthly_spend_cap_usd" in fields:  # exactly as written: 10.1 is 10.10
        fields["monthly_spend_cap_usd"] = money(
            fields["monthly_spend_cap_usd"], Policy._meta.get_field("monthly_spend_cap_usd")
        )
    policy, _ = Policy.objects.get_or_create(org=org)
    before = _policy_summary(policy)
    for name, value in fields.items():
        setattr(policy, name, value)
    policy.full_clean()
    if policy.default_max_tokens_estimate < 1:  # 0 would reserve nothing for the answer
        raise ValidationError("default_max_tokens_estimate: must be at least 1.")
    policy.save()
    policy.refresh_from_db()
    after = _policy_summary(policy)
    record_config_change(
        actor=actor, org=org, entity="policy", target=policy, before=before, after=after
    )
    return policy


def _routing_summary(rp: RoutingPolicy) -> dict:
    return {
        "name": rp.name,
        "strategy": rp.strategy,
        "models": rp.model_names,
        "weights": rp.weights,
        "smart": rp.smart,
        "is_active": rp.is_active,
    }


def _weights_checked(weights, models) -> dict:
    """A routing policy's weights: public model name -> whole number >= 0, each one of the
    policy's models, not all 0 (they say how the weighted strategy splits requests)."""
    if weights is None:
        return {}
    if not isinstance(weights, dict):
        raise ValidationError({"weights": "Weights must be a mapping of model name to weight."})
    out = {}
    for model, weight in weights.items():
        model = unicodedata.normalize("NFC", model) if isinstance(model, str) else model
        if model not in models:
            raise ValidationError(
                {
                    "weights": f"A weight is set for {str(model)[:100]!r}, which is not one of "
                    f"this policy's models ({', '.join(models)})."
                }
            )
        try:
            out[model] = whole(weight, minimum=0)
        except ValueError as exc:
            raise ValidationError({"weights": f"The weight of {model!r} {exc}"}) from exc
    if out and not any(out.values()):
        raise ValidationError(
            {"weights": "The weights are all 0: give at least one model a positive weight."}
        )
    return out


# Set together they are refused (core.smart.resolve): the one a partial update sends
# replaces the other, as the dashboard's slider and thresholds box do.
_SMART_EXCLUSIVE = {"aggressiveness": "thresholds", "thresholds": "aggressiveness"}


def smart_merged(saved, patch):
    """The smart settings after a partial update (REST PATCH of a routing policy, PUT of
    the gateway config) sends ``patch`` over ``saved``, as JSON Merge Patch (RFC 7396)
    merges: a key sent replaces that key (a mapping, such as ``ab`` or ``keywords``, is
    merged the same way, key by key), a key sent as null removes it, the others stay.
    Sending one of aggressiveness and thresholds drops the other. ``patch`` None (the
    whole ``smart`` sent as null) removes every setting; a patch that is not a mapping is
    returned as it is, for the check to refuse."""
    if patch is None:
        return {}
    if not isinstance(patch, dict):
        return patch
    out = dict(saved) if isinstance(saved, dict) else {}
    for key, other in _SMART_EXCLUSIVE.items():
        if patch.get(key) is not None and other not in patch:
            out.pop(other, None)
    return _merge_patch(out, patch)


def _merge_patch(target: dict, patch: dict) -> dict:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            before = out.get(key)
            out[key] = _merge_patch(before if isinstance(before, dict) else {}, value)
        else:
            out[key] = value
    return out


def models_distinct(models, field: str) -> None:
    """Refuse a list of models (a routing policy's, the smart tiers) in which two entries
    look alike (core.text.name_key: only case, width, spacing or a Cyrillic or Greek
    look-alike letter differ): a model is matched by its exact name, so one of the two
    names no deployment (or another one than the reader thinks), as aliases and
    deployment names are refused when they look like another."""
    seen = {}
    for model in models:
        key = name_key(model)
        other = seen.setdefault(key, model)
        if other != model:
            raise ValidationError(
                {
                    field: f"{field}: {shown(model)} looks like {shown(other)}, also listed "
                    "(only case, width or spacing differ; models are matched by their exact "
                    "name): list each model once, as its deployments name it."
                }
            )


# The name bn- keys of an org ask for to be smart-routed by its default (its
# auto_model_alias), while that is on (its smart_tiers set), else None: a setting of the
# gateway, which sits above this app and plugs its reader in at start-up (gateway.apps).
smart_alias_of = None


def smart_alias_checked(org, models) -> None:
    """Refuse a routing policy's model (a smart tier, or a model of any strategy) named as
    the org's smart routing alias, or like it (only case, width or spacing differ): no
    deployment may take that name (gateway.services.deployment_save), so the policy could
    never route to it. The reverse, an alias a policy's model already has, is refused where
    the alias is set (gateway.services)."""
    alias = smart_alias_of(org) if smart_alias_of is not None and org is not None else None
    if alias is None:
        return
    model = alias if alias in models else look_alike(alias, models)
    if model is None:
        return
    said = (
        f"{shown(alias)} is the alias of this organization's smart routing"
        if model == alias
        else f"{shown(model)} looks like {shown(alias)}, the alias of this organization's "
        "smart routing (only case, width or spacing differ)"
    )
    raise ValidationError(
        {
            "models": f"{said}: no deployment can take that name (bn- keys asking "
            "for it are smart-routed), so this policy could never route to it. List the "
            "deployments' public names, or change the alias under Routing."
        }
    )


def learned_refusal(org) -> str:
    """Why ``org`` may not use the learned classifier: its tier does not include it."""
    from orgs.models import Tier, tiers_including_learned

    tier = Tier(org.tier).label if org.tier in Tier.values else str(org.tier)
    including = tiers_including_learned()
    on = (
        f"on the {' and '.join(including)} tier{'s' if len(including) > 1 else ''}"
        if including
        else "on no tier at present"
    )
    return (
        f"The learned classifier is {on}; this organization is on {tier} (rules is "
        "included in every tier; a platform admin sets what each tier includes)."
    )


def _tier_checked(spec, org, saved=None) -> None:
    """Refuse the learned classifier (or an A/B arm of it) where ``org``'s tier does not
    include it (orgs.TierLimit.learned_routing). At configuration time only: settings saved
    before a downgrade keep being served, with rules (gateway.snapshot_builder), and a save
    that leaves them as they are (the policy disabled, its models changed) is taken: it
    was refused, and a downgraded org could not even turn its policy off. The refusal says
    what to change."""
    from orgs.models import tier_includes_learned

    if org is None or not smart.uses_learned(spec) or tier_includes_learned(org.tier):
        return
    if saved is not None and spec == saved:
        return
    message = learned_refusal(org)
    if spec.get("classifier") == "learned":
        raise ValidationError(
            {
                "smart": f"{message} To change these smart settings, set smart.classifier "
                "to rules (and no A/B arm of learned); a save that leaves them as they "
                "are is taken."
            }
        )
    raise ValidationError(
        {
            "smart": f"smart.ab.classifier: {message} To change these smart settings, set "
            "smart.ab.classifier to another arm or remove the A/B test (ab: null); a save "
            "that leaves them as they are is taken."
        }
    )


def smart_checked(
    spec, tiers, enabled: bool, saved=None, tiers_field="models", *, org=None
) -> dict:
    """Smart routing settings as saved: checked against the tiers when the strategy is
    smart (core.smart.resolve says what is wrong); refused when it is another strategy.
    ``saved``: the settings stored before, whose keywords a save keeps unchecked. A fault
    of the tiers themselves (too few, repeated) is refused under ``tiers_field``, the
    setting that holds them (``models`` of a policy, ``smart_tiers`` of the org default),
    not under ``smart``, which did nothing wrong."""
    if not enabled:
        if spec:
            raise ValidationError(
                {"smart": "Smart settings apply only to the smart strategy; set strategy: smart."}
            )
        return {}
    try:
        smart.resolve({}, tiers)  # the tiers alone, with every setting at its default
    except ValueError as exc:
        raise ValidationError({tiers_field: str(exc)}) from exc
    models_distinct(tiers, tiers_field)
    spec = _nulls_left_out(spec)
    _tier_checked(spec, org, saved)
    try:
        smart.resolve(
            spec or {},
            tiers,
            strategies_known=strategies.STRATEGIES,
            kept_keywords=smart.saved_keywords(saved),
            learned_kept=saved is not None and spec == saved,
        )
    except ValueError as exc:
        raise ValidationError({"smart": str(exc)}) from exc
    return smart_normalised(spec)


def _nulls_left_out(spec):
    """A setting given as null is not set (its default applies), as a REST partial update
    reads it, on every way in: the config file's `classifier: null` was "Unknown classifier
    'None'" and `keywords: {code: null}` a refusal, where `ab: null` was taken. Inside `ab`
    too: what is left of it is checked as it is (one key alone is refused)."""
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if v is not None}
    for key in ("keywords", "ab"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if v is not None}
    return out


def _unsigned(value):
    """-0.0 as 0.0 (a number the check took, stored as the user would write it)."""
    return 0.0 if isinstance(value, float) and value == 0 else value


def smart_normalised(spec) -> dict:
    """Checked smart settings as they are stored: an empty ``ab`` or ``keywords`` (what a
    partial update removing their last key leaves, or a file writing ``ab: {}``) left out,
    as is a setting sent as null; -0.0 stored as 0.0. Two specs that route the same are
    then stored, exported and diffed the same."""
    out = {}
    for key, value in (_nulls_left_out(spec) or {}).items():
        if key in ("ab", "keywords") and value == {}:
            continue
        if key == "aggressiveness":
            value = _unsigned(value)
        elif key == "thresholds":
            value = [_unsigned(t) for t in value]
        elif key == "ab":
            value = {k: _unsigned(v) if k == "share" else v for k, v in value.items()}
        out[key] = value
    return out


@transaction.atomic
def routing_policy_save(
    *,
    actor: Actor,
    org,
    name: str,
    strategy: str = "failover",
    models=(),
    weights: dict | None = None,
    smart: dict | None = None,
    is_active: bool = True,
) -> RoutingPolicy:
    problem = strategies.error_for(strategy)
    if problem:
        raise ValidationError({"strategy": problem})
    if not models:
        raise ValidationError("A routing policy needs at least one model.")
    # The Django admin's JSON box also takes a number, NaN or an object; a name is checked
    # as every name is (core.text), the smart tiers' bidi controls and zero widths included.
    models = names_checked(models, "models", max_length=MAX_TIER_NAME)
    models_distinct(models, "models")
    smart_alias_checked(org, models)
    weights = _weights_checked(weights, models)
    name = name_checked(name)  # before the query: PostgreSQL cannot compare a NUL
    rp = RoutingPolicy.objects.for_org(org).filter(name=name).first()
    smart = smart_checked(smart, models, strategy == "smart", rp.smart if rp else None, org=org)
    before = _routing_summary(rp) if rp else None
    if rp is None:  # an rt- key shows its policy's name: "Prod" beside "prod" is a trap
        names = RoutingPolicy.objects.for_org(org).values_list("name", flat=True)
        distinct_checked(name, names, what="routing policy")
    rp = rp or RoutingPolicy(org=org, name=name)
    rp.strategy, rp.model_names, rp.weights, rp.smart, rp.is_active = (
        strategy,
        list(models),
        weights,
        smart,
        is_active,
    )
    rp.full_clean()
    rp.save()
    after = _routing_summary(rp)
    record_config_change(
        actor=actor, org=org, entity="routing_policy", target=rp, before=before, after=after
    )
    return rp


ROUTING_POLICY_NAME_TAKEN = "A routing policy with this name exists in this organization."


@transaction.atomic
def routing_policy_create(*, actor: Actor, org, name: str, **fields) -> RoutingPolicy:
    """A new routing policy (routing_policy_save's arguments). A name the org already has
    is refused: changing a policy is an explicit edit (routing_policy_save on it), never a
    side effect of creating one. apply_config keeps routing_policy_save's create-or-update."""
    name = name_checked(name)  # before the query: PostgreSQL cannot compare a NUL
    if RoutingPolicy.objects.for_org(org).filter(name=name).exists():
        raise ValidationError({"name": ROUTING_POLICY_NAME_TAKEN})
    return routing_policy_save(actor=actor, org=org, name=name, **fields)


@transaction.atomic
def routing_policy_delete(*, actor: Actor, routing_policy: RoutingPolicy) -> None:
    """Delete a routing policy no live rt- key uses. While keys use it, the deletion is
    refused naming them (revoke them, or disable the policy instead): deleting it under
    them would turn their apps' requests into 401s without a word."""
    # An expired key counts: its expiry can be moved, and it would come back without a policy.
    in_use = list(routing_policy.keys.filter(revoked_at__isnull=True).order_by("name")[:11])
    if in_use:
        names = ", ".join(f"{k.name} ({k.masked})" for k in in_use[:10])
        more = " and more" if len(in_use) > 10 else ""
        raise ValidationError(
            f"Routing policy {routing_policy.name} is used by the rt- key(s) {names}{more}: "
            "revoke them first, or disable the policy instead."
        )
    # Revoked keys never serve again; they keep their rows (and usage history) but let go
    # of the policy, whose foreign key protects it from deletion.
    routing_policy.keys.update(routing_policy=None)
    record_config_delete(
        actor=actor,
        org=routing_policy.org,
        entity="routing_policy",
        target=routing_policy,
        before=_routing_summary(routing_policy),
    )
