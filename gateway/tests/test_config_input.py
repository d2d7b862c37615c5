"""Numbers in the apply_config file: money read exactly from its text (10.1 stays 10.1),
and every wrong value refused with an error that names its path, never a traceback
(issue 12: `monthly_spend_cap_usd: 10.1` was refused with "Ensure that there are no more
than 2 decimal places", naming no field)."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Deployment, GatewayConfig
from governance.models import Policy, RoutingPolicy
from orgs.models import AuditLog, Organization

pytestmark = pytest.mark.django_db

BASE = """\
orgs:
  - slug: acme
    name: Acme
    providers:
      - {name: mock, kind: mock}
"""


def _apply(tmp_path, text):
    path = tmp_path / "bonito.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), stdout=out, stderr=StringIO())
    return out.getvalue()


def _refused(tmp_path, text) -> str:
    with pytest.raises(CommandError) as info:
        _apply(tmp_path, text)
    assert not Organization.objects.exists()  # all or nothing
    return str(info.value)


def _deployment(**fields):
    extra = "".join(f", {k}: {v}" for k, v in fields.items())
    return f"    deployments:\n      - {{model: chat, provider: mock, upstream_model: m{extra}}}\n"


# ------------------------------------------------------------------------------ read exactly
def test_a_spend_cap_of_10_1_is_10_10(tmp_path):
    _apply(tmp_path, BASE + "    policy: {monthly_spend_cap_usd: 10.1}\n")
    assert Policy.objects.get().monthly_spend_cap_usd == Decimal("10.10")


@pytest.mark.parametrize(
    "written,stored",
    [
        ("10.1", "10.10"),
        ("0.29", "0.29"),  # 0.29 is 0.28999… as a float
        ("1234567890.99", "1234567890.99"),
        ("50", "50"),
        ('"10.1"', "10.10"),  # quoted: the text itself
        ("1_000.50", "1000.50"),  # YAML 1.1 digit groups
        ("1.0e+2", "100"),
        ("null", None),
    ],
)
def test_spend_caps_are_read_from_their_text(tmp_path, written, stored):
    _apply(tmp_path, BASE + f"    policy: {{monthly_spend_cap_usd: {written}}}\n")
    cap = Policy.objects.get().monthly_spend_cap_usd
    assert cap == (Decimal(stored) if stored is not None else None)


@pytest.mark.parametrize("written", ["0x10", "010", "1:30", "0b11"])
def test_numbers_not_written_in_decimal_are_refused(tmp_path, written):
    # YAML 1.1 reads 0x10 as 16, 010 as 8 and 1:30 as 90: $16 for a cap written "0x10".
    message = _refused(tmp_path, BASE + f"    policy: {{monthly_spend_cap_usd: {written}}}\n")
    assert f"the number '{written}' is not written in decimal" in message
    assert "line 6" in message


def test_prices_are_read_from_their_text(tmp_path):
    # The documented example: 0.15 and 0.60 are 0.1499… and 0.5999… as floats.
    _apply(
        tmp_path,
        BASE + _deployment(input_price_per_mtok=0.15, output_price_per_mtok="0.000001"),
    )
    d = Deployment.objects.get()
    assert d.input_price_per_mtok == Decimal("0.15")
    assert d.output_price_per_mtok == Decimal("0.000001")


def test_more_digits_than_a_float_holds_are_not_rounded_away(tmp_path):
    # As a float this is 10.1 exactly; from its text it has 18 decimal places.
    message = _refused(
        tmp_path, BASE + "    policy: {monthly_spend_cap_usd: 10.100000000000000001}\n"
    )
    assert "orgs[0].policy.monthly_spend_cap_usd: Ensure that there are no more than 12" in message


def test_the_issue_message_names_the_field(tmp_path):
    message = _refused(tmp_path, BASE + "    policy: {monthly_spend_cap_usd: 10.123}\n")
    assert message.endswith(
        "orgs[0].policy.monthly_spend_cap_usd: Ensure that there are no more than 2 decimal places."
    )


# ------------------------------------------------------------------------------ wrong values
WRONG = {
    "text": "abc",
    "list": "[1]",
    "mapping": "{a: 1}",
    "negative": "-1",
    "nan": ".nan",
    "inf": ".inf",
    "-inf": "-.inf",
    "overflowing float": "1.0e+400",
    "huge": "99999999999999999999999999",
    "boolean": "true",
    "non-ASCII digits": '"٣"',
}
MONEY_FIELDS = {
    "orgs[0].policy.monthly_spend_cap_usd": lambda v: (
        f"    policy: {{monthly_spend_cap_usd: {v}}}\n"
    ),
    "orgs[0].deployments[0].input_price_per_mtok": lambda v: _deployment(input_price_per_mtok=v),
    "orgs[0].deployments[0].output_price_per_mtok": lambda v: _deployment(output_price_per_mtok=v),
}


def _gateway(name):
    return lambda v: f"    gateway: {{{name}: {v}}}\n"


WHOLE_FIELDS = {
    "orgs[0].policy.default_max_tokens_estimate": lambda v: (
        f"    policy: {{default_max_tokens_estimate: {v}}}\n"
    ),
    "orgs[0].deployments[0].weight": lambda v: _deployment(weight=v),
    "orgs[0].deployments[0].priority": lambda v: _deployment(priority=v),
    "orgs[0].gateway.org_rpm_limit": _gateway("org_rpm_limit"),
    "orgs[0].gateway.org_tpm_limit": _gateway("org_tpm_limit"),
    "orgs[0].gateway.default_key_rpm": _gateway("default_key_rpm"),
    "orgs[0].gateway.default_key_tpm": _gateway("default_key_tpm"),
    "orgs[0].gateway.request_timeout_s": _gateway("request_timeout_s"),
    "orgs[0].routing_policies[0].weights.chat": lambda v: (
        _deployment()
        + f"    routing_policies: [{{name: r, strategy: weighted, models: [chat], weights: {{chat: {v}}}}}]\n"
    ),
    "orgs[0].sso.session_hours": lambda v: f"    sso: {{session_hours: {v}}}\n",
}


@pytest.mark.parametrize("kind", list(WRONG))
@pytest.mark.parametrize("path", list(MONEY_FIELDS) + list(WHOLE_FIELDS))
def test_wrong_numbers_are_refused_naming_their_path(tmp_path, path, kind):
    fragment = {**MONEY_FIELDS, **WHOLE_FIELDS}[path](WRONG[kind])
    message = _refused(tmp_path, BASE + fragment)
    assert f"bonito.yaml: {path}: " in message, message


@pytest.mark.parametrize("path", list(WHOLE_FIELDS))
def test_whole_numbers_refuse_fractions(tmp_path, path):
    message = _refused(tmp_path, BASE + WHOLE_FIELDS[path]("1.5"))
    assert f"{path}: must be a whole number" in message, message


def test_good_whole_numbers_are_applied(tmp_path):
    _apply(
        tmp_path,
        BASE
        + _deployment(weight=3, priority=0)
        + "    policy: {default_max_tokens_estimate: 2048}\n"
        + "    gateway: {org_rpm_limit: 1000, default_key_tpm: null, request_timeout_s: 30}\n"
        + "    routing_policies: [{name: r, strategy: weighted, models: [chat], weights: {chat: 9}}]\n",
    )
    d = Deployment.objects.get()
    assert (d.weight, d.priority) == (3, 0)
    assert Policy.objects.get().default_max_tokens_estimate == 2048
    config = GatewayConfig.objects.get()
    assert (config.org_rpm_limit, config.default_key_tpm, config.request_timeout_s) == (
        1000,
        None,
        30,
    )
    assert RoutingPolicy.objects.get().weights == {"chat": 9}


def test_nan_and_infinity_are_refused_anywhere_in_the_file(tmp_path):
    message = _refused(
        tmp_path,
        BASE.replace("{name: mock, kind: mock}", "{name: mock, kind: mock, settings: {x: .nan}}"),
    )
    assert "orgs[0].providers[0].settings.x: " in message


def test_field_errors_from_the_database_rules_name_their_path(tmp_path):
    message = _refused(
        tmp_path,
        BASE
        + "    deployments:\n      - {model: chat, provider: mock, upstream_model: "
        + "x" * 201
        + "}\n",
    )
    assert "orgs[0].deployments[0].upstream_model: Ensure this value has at most 200" in message


def test_a_refused_file_changes_nothing_and_writes_no_audit_row(tmp_path):
    _refused(tmp_path, BASE + "    policy: {monthly_spend_cap_usd: .inf}\n")
    assert not AuditLog.objects.exists()


# ------------------------------------------------------------------------------ every key
FULL_ORG = {
    "slug": "acme",
    "name": "Acme",
    "tier": "pro",
    "deployment_mode": "shared",
    "teams": ["R", {"name": "S", "description": "support"}],
    "members": [{"email": "a@acme.test", "role": "admin", "team": "R", "name": "A"}],
    "providers": [
        {"name": "mock", "kind": "mock", "api_base": "", "settings": {}, "is_active": True}
    ],
    "deployments": [
        {"model": "chat", "provider": "mock", "upstream_model": "m", "region": "x", "weight": 1}
    ],
    "policy": {"allowed_models": ["chat"], "denied_providers": [], "monthly_spend_cap_usd": 5},
    "routing_policies": [{"name": "r", "strategy": "weighted", "models": ["chat"]}],
    "gateway": {"default_strategy": "failover", "fallback_models": [], "org_rpm_limit": 10},
}
WRONG_VALUES = [[1], {"a": 1}, 5, 1.5, None, True, "", "x" * 300, "a\x00b"]


def _key_paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield (*prefix, key)
        if isinstance(value, dict | list):
            yield from _key_paths(value, (*prefix, key))


@pytest.mark.parametrize("path", list(_key_paths(FULL_ORG)), ids=str)
def test_any_wrong_value_anywhere_is_applied_or_refused_naming_its_path(tmp_path, path):
    """Each key of the format, with each wrong kind of value: either it means something
    (null or empty is "none") or a CommandError names a path under orgs[0]; never a
    traceback, never a database error."""
    import copy

    import yaml

    for value in WRONG_VALUES:
        doc = copy.deepcopy(FULL_ORG)
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        try:
            _apply(tmp_path, yaml.safe_dump({"orgs": [doc]}))
        except CommandError as exc:
            assert "bonito.yaml: orgs[0]" in str(exc), (path, value, str(exc))
        Organization.objects.all().delete()


# ------------------------------------------------------------------------------ exponents
def test_an_exponent_without_a_dot_is_a_number_as_in_json(tmp_path):
    """YAML 1.1 read `5e-1` as text: the file's `aggressiveness: 5e-1` was refused as
    "not a number (a number, unquoted)" though it was unquoted, where REST took it."""
    _apply(
        tmp_path,
        BASE + _deployment() + "    routing_policies:\n"
        "      - {name: s, strategy: smart, models: [chat, chat2], smart: {aggressiveness: 5e-1}}\n"
        "      - {name: t, strategy: smart, models: [chat, chat2], smart: {aggressiveness: 25E-2}}\n",
    )
    got = dict(RoutingPolicy.objects.values_list("name", "smart"))
    assert got["s"]["aggressiveness"] == 0.5 and got["t"]["aggressiveness"] == 0.25


def test_a_quoted_exponent_is_text(tmp_path):
    quoted = _refused(
        tmp_path,
        BASE + _deployment() + "    routing_policies:\n"
        "      - {name: s, strategy: smart, models: [chat, chat2], smart: {aggressiveness: '5e-1'}}\n",
    )
    assert "'5e-1'" in quoted


def test_a_date_where_a_number_is_asked_for_says_so(tmp_path):
    said = _refused(
        tmp_path,
        BASE + _deployment() + "    routing_policies:\n"
        "      - {name: s, strategy: smart, models: [chat, chat2], smart: {aggressiveness: 2026-01-01}}\n",
    )
    assert "Value must be valid JSON" not in said and "aggressiveness" in said, said


def test_a_date_in_the_org_default_s_smart_settings_says_so(tmp_path):
    said = _refused(
        tmp_path,
        BASE
        + _deployment()
        + "    gateway:\n      smart_tiers: [chat, chat2]\n"
        + "      smart: {aggressiveness: 2026-01-01}\n",
    )
    assert "Value must be valid JSON" not in said and "aggressiveness" in said, said


def test_a_number_where_a_name_goes_is_said_as_written(tmp_path):
    """`model: 1e3` was "must be text (quote it), not 1000.0"; in a list of names a float
    had no "(quote it)"; a team that is a number gave no value (an outside check)."""
    said = _refused(
        tmp_path,
        BASE + "    deployments:\n      - {model: 1e3, provider: mock, upstream_model: m}\n",
    )
    assert "(quote it), not 1e3." in said, said
    said = _refused(
        tmp_path,
        BASE + _deployment() + "    gateway: {smart_tiers: [chat, 1e3]}\n",
    )
    assert "smart_tiers[1]: must be a name (text) (quote it), not 1e3." in said, said
    said = _refused(tmp_path, BASE + "    teams: [1e3]\n")
    assert "teams[0]: must be a name (quote it) or a mapping, not 1e3." in said, said
