"""Declarative set-up from a YAML file (`manage.py apply_config`), GitOps style.

Each section converges the database to what the file says for the objects it names;
objects the file does not mention are left alone. Later issues add sections.
"""

import math
import re
from contextlib import contextmanager

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from core.numbers import INT32_MAX, SourceFloat, describe, whole
from orgs.audit import Actor

from . import services
from .models import Membership, Organization, Role, Team, User
from .sso import CONFIG_FIELDS, metadata_fields, sso_config_save

ORG_KEYS = {"slug", "name", "tier", "deployment_mode", "vpc_only", "teams", "members", "sso"}
ATTRIBUTE_FIELDS = {"email_attribute", "name_attribute", "groups_attribute"}
# The file's sso: keys: the stored settings, with the three attribute names under
# `attributes`, plus metadata XML and the break-glass owner's email.
SSO_KEYS = (set(CONFIG_FIELDS) - ATTRIBUTE_FIELDS) | {"idp_metadata", "attributes", "break_glass"}


class ConfigError(ValueError):
    """The file is not valid; the message says where."""


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a float keeps the text it was written as, so money
    is read exactly (`10.1` is 10.1, not the float 10.0999…)."""


def _float(loader, node):
    return SourceFloat(loader.construct_yaml_float(node), node.value)


ConfigLoader.add_constructor("tag:yaml.org,2002:float", _float)
# YAML 1.1 reads an exponent without a dot (`5e-1`, `1e3`) as text, where YAML 1.2, JSON
# and the REST API read a number: a file's `aggressiveness: 5e-1` was refused as "not a
# number (unquoted)" though it was unquoted. Read as YAML 1.2 does.
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)

_DECIMAL_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")


def _int(loader, node):
    # YAML 1.1 also reads 0x10 as 16, 010 as 8 and 1:30 as 90: in a file of limits and
    # money, a number means what it says in decimal or it is refused.
    if not _DECIMAL_INT.fullmatch(node.value):
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"the number {node.value!r} is not written in decimal; write it as "
            "digits (or quote it if it is text)",
            node.start_mark,
        )
    return loader.construct_yaml_int(node)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", _int)


# A config file is a few hundred nodes; anchors and aliases may shorten it, but a file whose
# aliases nest (a "billion laughs") expands to millions of nodes that every later step walks,
# for seconds of CPU per request. The expanded size is counted on the composed node graph
# (each anchored node once, memoised) before any Python object is built.
MAX_EXPANDED_NODES = 20_000


class ConfigTooLarge(yaml.YAMLError):
    pass


def _expanded_size(node, memo: dict, limit: int) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # a node that contains itself (a recursive alias) is too large
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, memo, limit)
        if size > limit:
            break
    memo[key] = size
    return size


def config_load(text: str):
    """The parsed file; yaml.YAMLError if it is not YAML, or if its aliases expand it past
    MAX_EXPANDED_NODES."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
            raise ConfigTooLarge(
                f"the file expands to more than {MAX_EXPANDED_NODES} values once its "
                "aliases (*name) are filled in; write the repeated parts out, or use fewer "
                "nested anchors"
            )
        if _depth(node) > MAX_DEPTH:
            raise ConfigTooLarge(f"the file is nested more than {MAX_DEPTH} levels deep")
        _check_scalars(loader, node)
        return loader.construct_document(node)
    except RecursionError:  # the parser's own recursion, before any check could run
        raise ConfigTooLarge(f"the file is nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def _check_scalars(loader, node) -> None:
    """Refuse, with where it is, a scalar Python cannot hold: a timestamp that is no day
    (`2026-02-30` would raise ValueError while the file is built) or text with an unpaired
    surrogate escape (`"\\ud800"`: not Unicode text, and no message quoting it could be
    written out)."""
    stack, seen = [node], set()
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, yaml.SequenceNode):
            stack.extend(cur.value)
        elif isinstance(cur, yaml.MappingNode):
            _no_duplicate_key(cur)
            stack.extend(part for pair in cur.value for part in pair)
        elif isinstance(cur, yaml.ScalarNode):
            problem = None
            try:
                cur.value.encode("utf-8")
            except UnicodeEncodeError:
                problem = (
                    "the text has an unpaired surrogate escape (such as \\ud800): it is not "
                    "Unicode text"
                )
            else:
                if cur.tag == _TIMESTAMP:
                    try:
                        loader.construct_yaml_timestamp(cur)
                    except (ValueError, OverflowError) as exc:
                        problem = (
                            f"{cur.value!r} is read as a date or time, and there is no such "
                            f"day ({exc}); quote it if it is text"
                        )
            if problem:
                raise yaml.constructor.ConstructorError(None, None, problem, cur.start_mark)


def _no_duplicate_key(node) -> None:
    """A key written twice in one mapping is refused where its second is: YAML's loader
    kept the last one silently (`ab: {share: 0.1, classifier: strong, share: 0.2}` applied
    0.2). Keys a merge (`<<: *base`) brings in may be overridden, as YAML means."""
    seen = set()
    for key, _value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if (key.tag, key.value) in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key.value!r} is written twice in one mapping", key.start_mark
            )
        seen.add((key.tag, key.value))


MAX_DEPTH = 32  # a config file is a few levels deep; every walk of it stays far from the limit


def _depth(node) -> int:
    """How deeply a composed YAML node nests (iteratively: no recursion of its own)."""
    deepest, stack, seen = 0, [(node, 1)], set()
    while stack:
        cur, depth = stack.pop()
        deepest = max(deepest, depth)
        if id(cur) in seen or depth > MAX_DEPTH:
            continue
        seen.add(id(cur))
        if isinstance(cur, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in cur.value)
        elif isinstance(cur, yaml.MappingNode):
            stack.extend((v, depth + 1) for _k, v in cur.value)
    return deepest


def located(exc: ValidationError, where: str, names: dict | None = None) -> str:
    """A ValidationError's messages, each after the path of the field it is about
    (`orgs[0].policy.monthly_spend_cap_usd: …`); `names` maps model fields to file keys."""
    if not hasattr(exc, "error_dict"):
        return f"{where}: {' '.join(exc.messages)}"
    names = names or {}
    out = []
    for field, messages in exc.message_dict.items():
        if field == NON_FIELD_ERRORS:
            out.append(f"{where}: {' '.join(messages)}")
            continue
        key = names.get(field, field)
        # A message that starts with its field's own path ("smart.ab needs…", "models: 'x'
        # looks like…") continues the file's path, not repeats it ("smart: smart.ab…").
        parts = [
            f"{where}.{m}"
            if m.startswith((f"{key}.", f"{key}:", f"{key} "))
            else f"{where}.{key}: {m}"
            for m in messages
        ]
        out.append(" ".join(parts))
    return "; ".join(out)


@contextmanager
def errors_at(where: str, names: dict | None = None):
    """Turn the ValidationErrors of a service call into a ConfigError naming the path."""
    try:
        yield
    except ValidationError as exc:
        raise ConfigError(located(exc, where, names)) from exc


def whole_at(spec: dict, name: str, where: str, *, null=False, minimum=0, maximum=INT32_MAX):
    """spec[name] as a whole number in [minimum, maximum] (None if `null` allows it)."""
    value = spec[name]
    if value is None and null:
        return None
    try:
        return whole(value, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        raise ConfigError(f"{where}.{name}: {exc}") from exc


TEXT, TEXTS, MAPPING, LIST, FLAG = (
    "text",
    "a list of names",
    "a mapping",
    "a list",
    "true or false",
)
_IS = {
    TEXT: lambda v: isinstance(v, str),
    TEXTS: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    MAPPING: lambda v: isinstance(v, dict),
    LIST: lambda v: isinstance(v, list),
    FLAG: lambda v: isinstance(v, bool),
}


def check_types(spec: dict, kinds: dict, where: str, nullable=()) -> None:
    """Each key of `kinds` that `spec` has holds that kind of value (null only for the
    keys in `nullable`), or a ConfigError names its path."""
    for key, kind in kinds.items():
        if key not in spec or spec[key] is None and key in nullable:
            continue
        if kind == TEXTS and isinstance(spec[key], list):
            # a list, with an item that is not text: that item, not "not a list"
            for i, item in enumerate(spec[key]):
                if not isinstance(item, str):
                    number = isinstance(item, int | float) and not isinstance(item, bool)
                    hint = " (quote it)" if number else ""
                    raise ConfigError(
                        f"{where}.{key}[{i}]: must be a name (text){hint}, not {describe(item)}."
                    )
        if not _IS[kind](spec[key]):
            hint = " (quote it)" if kind == TEXT and isinstance(spec[key], int | float) else ""
            raise ConfigError(f"{where}.{key}: must be {kind}{hint}, not {describe(spec[key])}.")


def _check_values(node, where: str) -> None:
    """No NaN or infinity, and no NUL character, anywhere: no column or JSON value can
    hold them (PostgreSQL refuses NUL in text)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where}: must be a finite number, not {getattr(node, 'source', node)}.")
    if isinstance(node, str) and "\x00" in node:
        raise ConfigError(f"{where}: must not contain NUL characters.")
    if isinstance(node, dict):
        for key, value in node.items():
            _check_values(key, f"{where}.{key!r}")
            _check_values(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_values(value, f"{where}[{i}]")


def _require(mapping, key, where):
    if key not in mapping or mapping[key] in (None, ""):
        raise ConfigError(f"{where}: '{key}' is required.")
    return mapping[key]


ORG_TYPES = {
    "slug": TEXT,
    "name": TEXT,
    "tier": TEXT,
    "deployment_mode": TEXT,
    "vpc_only": FLAG,
    "teams": LIST,
    "members": LIST,
}
TEAM_TYPES = {"name": TEXT, "description": TEXT}
MEMBER_TYPES = {"email": TEXT, "role": TEXT, "team": TEXT, "name": TEXT, "password": TEXT}


def _deployment_mode_set(*, actor, org, deployment_mode):
    return services.org_update(actor=actor, org=org, deployment_mode=deployment_mode)


_mode_setter = _deployment_mode_set


def use_deployment_mode_setter(setter) -> None:
    """How a file switches an org's deployment mode. The agents app (above orgs) puts in
    the dashboard's switch at start, so that leaving VPC mode revokes the org tokens."""
    global _mode_setter
    _mode_setter = setter


def _apply_org(actor, spec, where, extensions):
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping, not {describe(spec)}.")
    check_types(spec, ORG_TYPES, where, nullable={"teams", "members"})
    unknown = set(spec) - ORG_KEYS - set(extensions)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
    slug = _require(spec, "slug", where)
    org = Organization.objects.filter(slug=slug).first()
    fields = {k: spec[k] for k in ("name", "tier") if k in spec}
    with errors_at(where):
        if org is None:
            org = services.org_create(
                actor=actor,
                slug=slug,
                name=_require(spec, "name", where),
                **{k: spec[k] for k in ("tier", "deployment_mode") if k in spec},
            )
        else:
            if fields:
                services.org_update(actor=actor, org=org, **fields)
            if spec.get("deployment_mode", org.deployment_mode) != org.deployment_mode:
                org = _mode_setter(actor=actor, org=org, deployment_mode=spec["deployment_mode"])
        if "vpc_only" in spec:
            services.org_vpc_only_set(actor=actor, org=org, vpc_only=spec["vpc_only"])

    for i, team_spec in enumerate(spec.get("teams") or []):
        team_spec = {"name": team_spec} if isinstance(team_spec, str) else team_spec
        if not isinstance(team_spec, dict):
            hint = " (quote it)" if isinstance(team_spec, int | float) else ""
            raise ConfigError(
                f"{where}.teams[{i}]: must be a name{hint} or a mapping, not {describe(team_spec)}."
            )
        check_types(team_spec, TEAM_TYPES, f"{where}.teams[{i}]")
        name = _require(team_spec, "name", f"{where}.teams[{i}]")
        if not Team.objects.for_org(org).filter(name=name).exists():
            with errors_at(f"{where}.teams[{i}]"):
                services.team_create(
                    actor=actor, org=org, name=name, description=team_spec.get("description", "")
                )

    for i, member in enumerate(spec.get("members") or []):
        mwhere = f"{where}.members[{i}]"
        if not isinstance(member, dict):
            raise ConfigError(f"{mwhere}: must be a mapping, not {describe(member)}.")
        check_types(member, MEMBER_TYPES, mwhere, nullable={"team", "password"})
        email = str(_require(member, "email", mwhere)).lower()
        for field, value in (("email", email), ("name", member.get("name"))):
            if value:  # create_user does not check them
                try:
                    User._meta.get_field(field).run_validators(value)
                except ValidationError as exc:
                    raise ConfigError(f"{mwhere}.{field}: {' '.join(exc.messages)}") from exc
        role = member.get("role", Role.MEMBER)
        if role not in Role.values:
            raise ConfigError(f"{mwhere}: role must be admin, member or viewer, not {role!r}.")
        team = None
        if member.get("team"):
            team = Team.objects.for_org(org).filter(name=member["team"]).first()
            if team is None:
                raise ConfigError(f"{mwhere}: team {member['team']!r} is not defined in this org.")
        with errors_at(mwhere):
            user = User.objects.filter(email__iexact=email).first() or services.user_create(
                actor=actor,
                email=email,
                password=member.get("password"),
                name=member.get("name") or "",
            )
            existing = Membership.objects.for_org(org).filter(user=user).first()
            if existing is None:
                services.membership_add(actor=actor, org=org, user=user, role=role, team=team)
            elif (existing.role, existing.team_id) != (role, team.id if team else None):
                services.membership_set_role(actor=actor, membership=existing, role=role, team=team)

    if "sso" in spec:
        _apply_sso(actor, org, spec["sso"], f"{where}.sso")

    for name, apply in extensions.items():
        if name in spec:
            apply(actor=actor, org=org, spec=spec[name], where=f"{where}.{name}")
    return org


def _apply_sso(actor, org, spec, where):
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping.")
    unknown = set(spec) - SSO_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
    fields = {
        k: v for k, v in spec.items() if k not in ("idp_metadata", "attributes", "break_glass")
    }
    attributes = spec.get("attributes") or {}
    if set(attributes) - {"email", "name", "groups"}:
        raise ConfigError(f"{where}.attributes: use email, name and groups.")
    for name, value in attributes.items():
        fields[f"{name}_attribute"] = value
    if "session_hours" in spec:  # the dashboard's bounds
        fields["session_hours"] = whole_at(spec, "session_hours", where, minimum=1, maximum=720)
    names = {f"{name}_attribute": f"attributes.{name}" for name in ("email", "name", "groups")}
    with errors_at(where, names):
        if spec.get("idp_metadata"):
            fields.update(metadata_fields(spec["idp_metadata"]))
        sso_config_save(
            actor=actor,
            org=org,
            break_glass_email=spec.get("break_glass"),
            verify_domains=True,  # the operator, with shell access, vouches for the file
            **fields,
        )


def config_apply(*, actor: Actor, data, extensions=None) -> list[Organization]:
    """Apply a parsed config file in one transaction: all of it or none of it."""
    if not isinstance(data, dict) or not isinstance(data.get("orgs"), list):
        raise ConfigError("The file must be a mapping with an 'orgs:' list.")
    extensions = extensions or {}
    _check_values(data["orgs"], "orgs")
    try:
        with transaction.atomic():
            return [
                _apply_org(actor, spec, f"orgs[{i}]", extensions)
                for i, spec in enumerate(data["orgs"])
            ]
    except ValidationError as exc:
        raise ConfigError("; ".join(exc.messages)) from exc
