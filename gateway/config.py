"""Gateway sections of the apply_config file: providers, deployments, policy, routing
policies and gateway settings. See docs/config.md for the schema."""

import os
import re

from core import strategies
from governance import services as governance_services
from orgs.config import (
    FLAG,
    MAPPING,
    TEXT,
    TEXTS,
    ConfigError,
    check_types,
    errors_at,
    whole_at,
)

from . import services
from .dataplane import provider_kinds
from .models import ProviderConnection

PROVIDER_KEYS = {"name", "kind", "api_base", "api_key", "credentials", "settings", "is_active"}
DEPLOYMENT_KEYS = {
    "model",
    "provider",
    "upstream_model",
    "region",
    "weight",
    "priority",
    "timeout_s",
    "is_active",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "unit_price",
}
ROUTING_KEYS = {"name", "strategy", "models", "weights", "smart", "is_active"}
PROVIDER_TYPES = {
    "name": TEXT,
    "kind": TEXT,
    "api_base": TEXT,
    "api_key": TEXT,
    "credentials": MAPPING,
    "settings": MAPPING,
    "is_active": FLAG,
}
DEPLOYMENT_TYPES = {
    "model": TEXT,
    "provider": TEXT,
    "upstream_model": TEXT,
    "region": TEXT,
    "is_active": FLAG,
}
ROUTING_TYPES = {
    "name": TEXT,
    "strategy": TEXT,
    "models": TEXTS,
    "weights": MAPPING,
    "smart": MAPPING,
    "is_active": FLAG,
}
GATEWAY_TYPES = {
    "default_strategy": TEXT,
    "enabled_providers": TEXTS,
    "fallback_models": TEXTS,
    "smart_tiers": TEXTS,
    "smart": MAPPING,
    "auto_model_alias": TEXT,
    "cors_origins": TEXTS,
}
# Whole-number settings and their bounds (money is checked, exactly, by the services).
GATEWAY_LIMITS = ("org_rpm_limit", "org_tpm_limit", "default_key_rpm", "default_key_tpm")


def _secret(value, where):
    """A literal, or env:NAME read from the environment now (so files hold no secrets)."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set.")
        return os.environ[name]
    return value


def _check_keys(spec, allowed, where):
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping.")
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")


def _items(spec, where) -> list:
    """A section that lists items (null or absent: none)."""
    if spec is not None and not isinstance(spec, list):
        raise ConfigError(f"{where}: must be a list.")
    return spec or []


def apply_providers(*, actor, org, spec, where):
    for i, p in enumerate(_items(spec, where)):
        pwhere = f"{where}[{i}]"
        _check_keys(p, PROVIDER_KEYS, pwhere)
        check_types(p, PROVIDER_TYPES, pwhere, nullable={"credentials", "settings"})
        for required in ("name", "kind"):
            if not p.get(required):
                raise ConfigError(f"{pwhere}: '{required}' is required.")
        if provider_kinds.get(p["kind"]) is None:
            raise ConfigError(f"{pwhere}.kind: {provider_kinds.unknown(p['kind'])}")
        credentials = None
        if "credentials" in p or "api_key" in p:
            credentials = {
                k: _secret(v, f"{pwhere}.credentials.{k}")
                for k, v in (p.get("credentials") or {}).items()
            }
            if "api_key" in p:
                credentials["api_key"] = _secret(p["api_key"], f"{pwhere}.api_key")
        with errors_at(pwhere):
            services.provider_save(
                actor=actor,
                org=org,
                name=p["name"],
                kind=p["kind"],
                api_base=p.get("api_base", ""),
                settings=p.get("settings") or {},
                credentials=credentials,
                is_active=p.get("is_active", True),
            )


def apply_deployments(*, actor, org, spec, where):
    for i, d in enumerate(_items(spec, where)):
        dwhere = f"{where}[{i}]"
        _check_keys(d, DEPLOYMENT_KEYS, dwhere)
        check_types(d, DEPLOYMENT_TYPES, dwhere, nullable={"region"})
        for required in ("model", "provider", "upstream_model"):
            if not d.get(required):
                raise ConfigError(f"{dwhere}: '{required}' is required.")
        provider = ProviderConnection.objects.for_org(org).filter(name=d["provider"]).first()
        if provider is None:
            raise ConfigError(f"{dwhere}: provider {d['provider']!r} is not defined in this org.")
        weight = whole_at(d, "weight", dwhere) if "weight" in d else 1
        priority = whole_at(d, "priority", dwhere, null=True) if "priority" in d else None
        timeout_s = (
            whole_at(d, "timeout_s", dwhere, null=True, minimum=1) if "timeout_s" in d else None
        )
        with errors_at(dwhere, {"model_name": "model"}):
            services.deployment_save(
                actor=actor,
                org=org,
                model_name=d["model"],
                provider=provider,
                upstream_model=d["upstream_model"],
                region=d.get("region", ""),
                weight=weight,
                priority=priority,
                timeout_s=timeout_s,
                is_active=d.get("is_active", True),
                input_price_per_mtok=d.get("input_price_per_mtok"),
                output_price_per_mtok=d.get("output_price_per_mtok"),
                unit_price=d.get("unit_price"),
            )


def apply_policy(*, actor, org, spec, where):
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping.")
    spec = dict(spec)
    if "default_max_tokens_estimate" in spec:
        spec["default_max_tokens_estimate"] = whole_at(
            spec, "default_max_tokens_estimate", where, minimum=1
        )
    with errors_at(where):  # the spend cap is read exactly by policy_set
        governance_services.policy_set(actor=actor, org=org, **spec)


def apply_routing_policies(*, actor, org, spec, where):
    for i, r in enumerate(_items(spec, where)):
        rwhere = f"{where}[{i}]"
        _check_keys(r, ROUTING_KEYS, rwhere)
        check_types(r, ROUTING_TYPES, rwhere, nullable={"weights", "models", "smart"})
        if not r.get("name"):
            raise ConfigError(f"{rwhere}: 'name' is required.")
        weights = r.get("weights") or {}
        weights = {str(model): whole_at(weights, model, f"{rwhere}.weights") for model in weights}
        with errors_at(rwhere, {"model_names": "models"}):
            governance_services.routing_policy_save(
                actor=actor,
                org=org,
                name=r["name"],
                strategy=r.get("strategy", strategies.DEFAULT),
                models=r.get("models") or [],
                weights=weights,
                smart=r.get("smart") or {},
                is_active=r.get("is_active", True),
            )


def apply_gateway(*, actor, org, spec, where):
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping.")
    check_types(spec, GATEWAY_TYPES, where, nullable={"smart"})
    spec = dict(spec)
    if "smart" in spec and spec["smart"] is None:
        spec["smart"] = {}  # null: no settings (the defaults), as REST's "smart": null
    for name in GATEWAY_LIMITS:
        if name in spec:
            spec[name] = whole_at(spec, name, where, null=True, minimum=1)
    if "request_timeout_s" in spec:
        spec["request_timeout_s"] = whole_at(spec, "request_timeout_s", where, minimum=1)
    with errors_at(where):
        services.gateway_config_set(actor=actor, org=org, **spec)


def smart_price_warnings(org, spec) -> list[str]:
    """What the Routing page warns of the smart routing a file's org section sets, read
    once the whole file is applied (its deployments and prices included): for each smart
    routing policy it lists, and for the org default when it sets smart_tiers, each tier no
    active deployment serves and each lower tier dearer than the top one
    (services.smart_tier_warnings), led by where the file sets it. Warnings, not refusals: the file is applied all the same."""
    from governance.models import RoutingPolicy

    if not isinstance(spec, dict):
        return []
    out = []
    prices = None
    listed = spec.get("routing_policies")
    names = {
        i: r["name"]
        for i, r in enumerate(listed if isinstance(listed, list) else [])
        if isinstance(r, dict) and isinstance(r.get("name"), str)
    }
    saved = {
        p.name: p
        for p in RoutingPolicy.objects.for_org(org).filter(
            name__in=set(names.values()), strategy="smart"
        )
    }
    for i, name in names.items():
        if name in saved:
            prices = services.model_cheapest_prices(org) if prices is None else prices
            for warning in services.smart_tier_warnings(org, saved[name].model_names, prices):
                out.append(f"routing_policies[{i}] ({name}): {warning}")
    gateway = spec.get("gateway")
    if isinstance(gateway, dict) and gateway.get("smart_tiers"):
        from .models import GatewayConfig

        config = GatewayConfig.objects.filter(org=org).first()
        tiers = config.smart_tiers if config else []
        prices = services.model_cheapest_prices(org) if prices is None else prices
        for warning in services.smart_tier_warnings(org, tiers, prices):
            out.append(f"gateway.smart_tiers: {warning}")
    return out


# Order matters: deployments name providers; routing policies name models.
EXTENSIONS = {
    "providers": apply_providers,
    "deployments": apply_deployments,
    "policy": apply_policy,
    "routing_policies": apply_routing_policies,
    "gateway": apply_gateway,
}


# ------------------------------------------------------------------------------ one org over REST
# What a file sent over the REST API may hold: what an org admin changes in the dashboard
# (the org's name, deployment mode and vpc_only, teams, gateway sections). The org's tier,
# members and SSO stay with the platform admin's apply_config command.
REST_ORG_KEYS = {"slug", "name", "deployment_mode", "vpc_only", "teams", *EXTENSIONS}


_ORG_PATH = re.compile(r"(?<![\w\].])orgs\[0\]\.")


def org_config_apply(
    *, actor, org, data, dry_run: bool = False, warnings: list | None = None
) -> list[dict]:
    """Apply one org's part of an apply_config file (the whole ``orgs:`` file naming only
    this org, or its sections at the top level); all of it or none of it. Returns what
    changed, read from the audit rows it wrote; with ``dry_run`` nothing is kept.
    ``warnings``: a list to which the smart tiers' price warnings are added
    (smart_price_warnings; a dry run's too)."""
    from django.db import transaction

    from orgs.config import config_apply
    from orgs.models import AuditLog

    if isinstance(data, dict) and "orgs" in data:
        specs = data["orgs"]
        if not isinstance(specs, list) or len(specs) != 1 or not isinstance(specs[0], dict):
            raise ConfigError("The file must list exactly one org (this one) under 'orgs:'.")
        spec = dict(specs[0])
        if spec.get("slug", org.slug) != org.slug:
            raise ConfigError(f"orgs[0].slug: this token is for org {org.slug!r}.")
    elif isinstance(data, dict):
        spec = dict(data)
        # The sections at the top level may name their org too: never another one (an
        # admin of two orgs sending one's file with the other's token).
        if "slug" in spec and spec["slug"] != org.slug:
            raise ConfigError(f"slug: this token is for org {org.slug!r}.")
    else:
        raise ConfigError("The file must be a mapping.")
    refused = set(spec) - REST_ORG_KEYS
    if refused:
        raise ConfigError(
            f"unknown or not allowed over the API: {', '.join(sorted(map(str, refused)))} "
            f"(allowed: {', '.join(sorted(REST_ORG_KEYS))})."
        )
    _refuse_server_env(spec.get("providers"))
    spec["slug"] = org.slug
    with transaction.atomic():
        last = AuditLog.objects.order_by("-id").values_list("id", flat=True).first() or 0
        try:
            config_apply(actor=actor, data={"orgs": [spec]}, extensions=EXTENSIONS)
        except ConfigError as exc:
            if isinstance(data, dict) and "orgs" in data:
                raise
            # The sections were sent at the top level: paths as the file has them
            # (gateway.smart, not orgs[0].gateway.smart, which it does not have).
            raise ConfigError(_ORG_PATH.sub("", str(exc))) from None
        changes = [
            {
                "action": row.action,
                "target_type": row.target_type,
                "target": row.target_repr,
                "changes": row.changes,
            }
            for row in AuditLog.objects.filter(id__gt=last, org=org).order_by("id")
        ]
        if warnings is not None:
            warnings.extend(smart_price_warnings(org, spec))
        if dry_run:
            transaction.set_rollback(True)
    return changes


def _refuse_server_env(providers) -> None:
    """env:NAME reads the server's environment: the operator's apply_config command may, an
    org admin over the API may not (it would send the server's own secrets to their URL)."""
    for i, p in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(p, dict):
            continue
        values = {"api_key": p.get("api_key")}
        if isinstance(p.get("credentials"), dict):
            values.update({f"credentials.{k}": v for k, v in p["credentials"].items()})
        for where, value in values.items():
            if isinstance(value, str) and value.startswith("env:"):
                raise ConfigError(
                    f"providers[{i}].{where}: env: values are not read from the server's "
                    "environment over the API; send the secret itself (the bonito CLI fills "
                    "env:NAME from its own environment)."
                )


def _plain(value):
    """Decimals as text, so money reads back exactly."""
    from decimal import Decimal

    return str(value) if isinstance(value, Decimal) else value


def org_config_export(org) -> dict:
    """The org's gateway sections in the apply_config format. Provider credentials are
    never exported: applying the file keeps the stored ones."""
    from governance.models import Policy, RoutingPolicy

    from .models import Deployment, GatewayConfig

    providers = [
        {
            "name": p.name,
            "kind": p.kind,
            **({"api_base": p.api_base} if p.api_base else {}),
            **({"settings": p.settings} if p.settings else {}),
            "is_active": p.is_active,
        }
        for p in ProviderConnection.objects.for_org(org).order_by("name")
    ]
    deployments = [
        {
            "model": d.model_name,
            "provider": d.provider.name,
            "upstream_model": d.upstream_model,
            **({"region": d.region} if d.region else {}),
            "weight": d.weight,
            **({"priority": d.priority} if d.priority is not None else {}),
            **({"timeout_s": d.timeout_s} if d.timeout_s is not None else {}),
            "is_active": d.is_active,
            **{
                f: _plain(getattr(d, f))
                for f in ("input_price_per_mtok", "output_price_per_mtok", "unit_price")
                if getattr(d, f) is not None
            },
        }
        for d in Deployment.objects.for_org(org)
        .select_related("provider")
        .order_by("model_name", "provider__name", "id")
    ]
    routing = [
        {
            "name": r.name,
            "strategy": r.strategy,
            "models": r.model_names,
            **({"weights": r.weights} if r.weights else {}),
            **({"smart": r.smart} if r.smart else {}),
            "is_active": r.is_active,
        }
        for r in RoutingPolicy.objects.for_org(org).order_by("name")
    ]
    from orgs.models import Team

    spec = {
        "slug": org.slug,
        "name": org.name,
        "deployment_mode": org.deployment_mode,
        "vpc_only": org.vpc_only,
    }
    teams = Team.objects.for_org(org).order_by("name")
    if teams:
        spec["teams"] = [
            {"name": t.name, **({"description": t.description} if t.description else {})}
            for t in teams
        ]
    spec["providers"], spec["deployments"], spec["routing_policies"] = (
        providers,
        deployments,
        routing,
    )
    policy = Policy.objects.filter(org=org).first()
    if policy is not None:
        spec["policy"] = {f: _plain(getattr(policy, f)) for f in governance_services.POLICY_FIELDS}
    config = GatewayConfig.objects.filter(org=org).first()
    if config is not None:
        spec["gateway"] = {f: getattr(config, f) for f in services.GATEWAY_CONFIG_FIELDS}
    return {"orgs": [spec]}
