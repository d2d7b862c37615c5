"""The config version and its change log.

One counter every gateway process polls. Each bump also writes one ConfigChange row with
the new version saying what it touched, in the same transaction as the change:

- ``all``: anything (a full build); the no-argument bump, so nothing silently stops
  propagating;
- ``org``: one org's settings (policy, deployments, providers, gateway config, routing
  policies, budgets; the org itself) and its keys;
- ``org_only``: one org's settings, none of its keys' fields;
- ``key``: one key (``ref`` is its id);
- ``tier``: the limits of one tier (``ref``), so every org on it.

The bump updates the counter row first (UPDATE ... version + 1): that row lock is held
until commit, so versions commit in order, and a reader that sees version V sees every
change row up to V. ``changes_since`` returns None when the log cannot say what changed
(pruned, reset): the reader does a full build.
"""

from django.conf import settings
from django.db.models import F

from .models import ConfigChange, ConfigVersion

ALL, ORG, ORG_ONLY, KEY, TIER = "all", "org", "org_only", "key", "tier"
KINDS = (ALL, ORG, ORG_ONLY, KEY, TIER)


def config_version_bump(kind: str = ALL, *, org_id: int | None = None, ref: object = None) -> int:
    """Call inside the transaction that changes anything the data plane reads; returns
    the new version. Without arguments: everything changed (every gateway rebuilds)."""
    if kind not in KINDS:
        raise ValueError(f"unknown config change kind {kind!r}")
    if kind in (ORG, ORG_ONLY, KEY) and org_id is None:
        kind = ALL  # a change that does not say whose is everyone's
    if not ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1):
        ConfigVersion.objects.get_or_create(pk=1, defaults={"version": 1})
    version = current_version()
    ConfigChange.objects.create(
        version=version, kind=kind, org_id=org_id, ref="" if ref is None else str(ref)
    )
    keep = settings.CONFIG_CHANGES_KEPT
    if version % 100 == 0 and version > keep:
        ConfigChange.objects.filter(version__lte=version - keep).delete()
    return version


def current_version() -> int:
    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0


def current_stamp() -> tuple:
    """The version and when it moved: a stamp that changes on every bump, even after a reset."""
    return ConfigVersion.objects.filter(pk=1).values_list("version", "changed_at").first() or (
        0,
        None,
    )


def changes_since(since: int, until: int) -> list[tuple[str, int | None, str]] | None:
    """(kind, org_id, ref) of every change in (since, until], or None when the log does not
    hold them all (pruned, or the counter went backwards): then only a full build is right."""
    if until < since:
        return None
    rows = list(
        ConfigChange.objects.filter(version__gt=since, version__lte=until)
        .order_by("version")
        .values_list("kind", "org_id", "ref")
    )
    if len(rows) != until - since:  # versions are gapless: a missing one was pruned
        return None
    return rows
