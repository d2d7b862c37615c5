"""The config version and its change log.

One counter every gateway process polls. Each bump also writes one ConfigChange row with
the new version saying what it touched, in the same transaction as the change:

- ``all``: anything (a full build); the no-argument bump, so nothing silently stops
  propagating;
- ``org``: one org's settings (policy, deployments, providers, gateway config, routing
  policies, budgets; the org itself) and its keys;
- ``org_only``: one org's settings, none of its keys' fields;
- ``key``: one key (``ref`` is its id);
- ``org`` with ``ref`` ``key:<id>`` (``rotated_ref``): one key whose secret was replaced,
  the replaced one's hash kept on its row (``previous_key_hash``). A reader that knows the
  form drops that hash and reloads the one key; an older one (a replica or agent of an
  earlier release, mid-upgrade) reads a plain ``org`` change and reloads all the org's keys,
  which is right too, only slower;
- ``tier``: the limits of one tier (``ref``), so every org on it.

The bump updates the counter row first (UPDATE ... version + 1): that row lock is held
until commit, so versions commit in order, and a reader that sees version V sees every
change row up to V. ``changes_since`` returns None when the log cannot say what changed
(pruned, reset): the reader does a full build.

After the commit, the hooks in ``ON_COMMITTED`` get the versions the transaction made
(all of a transaction's at once): the gateway stores each version's delta, serialised, on its row
(``ConfigChange.delta``), so a change is built once, not once in every worker of every
replica; ``shared_deltas`` reads them back.
"""

import logging
from functools import cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from .models import ConfigChange, ConfigVersion

ALL, ORG, ORG_ONLY, KEY, TIER = "all", "org", "org_only", "key", "tier"
KINDS = (ALL, ORG, ORG_ONLY, KEY, TIER)

log = logging.getLogger("bonito.config")

# f(versions) run after the commit of a transaction that bumped the version (added by the
# apps above at start-up: the gateway shares the deltas).
ON_COMMITTED: list = []


def on_committed(hook) -> None:
    if hook not in ON_COMMITTED:
        ON_COMMITTED.append(hook)


class _Committed:
    """An on_commit callback per bump; the bumps of one transaction share one batch, and
    the first callback to run hands the hooks all of it (savepoints may make several)."""

    def __init__(self, batch: list):
        self.batch = batch

    def __call__(self):
        versions = tuple(sorted(set(self.batch)))
        self.batch.clear()
        if not versions:
            return
        for hook in ON_COMMITTED:
            try:
                hook(versions)
            except Exception:  # the change is committed: a hook's failure is only logged
                log.warning("after-commit hook %r failed", hook, exc_info=True)


def _announce(version: int) -> None:
    if not ON_COMMITTED:
        return
    conn = transaction.get_connection()
    batch: list = []
    if conn.in_atomic_block:
        for _sids, func, _robust in conn.run_on_commit:
            if isinstance(func, _Committed):
                batch = func.batch
                break
    batch.append(version)
    transaction.on_commit(_Committed(batch))


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
    if version % 100 == 0:
        if version > keep:
            ConfigChange.objects.filter(version__lte=version - keep).delete()
        # A shared delta is read within seconds of its change: old ones only take room.
        ConfigChange.objects.filter(version__lte=version - 100, delta__isnull=False).update(
            delta=None
        )
    _announce(version)
    return version


ROTATED = "key:"


def rotated_ref(key_id: int) -> str:
    """The ``ref`` of an ``org`` change that replaced one key's secret (see above)."""
    return f"{ROTATED}{int(key_id)}"


def rotated_key(ref: str) -> int | None:
    """The key id of a ``rotated_ref``, or None for any other ref."""
    if ref.startswith(ROTATED) and ref[len(ROTATED) :].isdigit():
        return int(ref[len(ROTATED) :])
    return None


def current_version() -> int:
    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0


def current_stamp() -> tuple:
    """The version and when it moved: a stamp that changes on every bump, even after a reset.
    Compare stamps only with each other. Polled by every worker's snapshot thread and by
    its usage writer on each batch, so it is one plain statement: the ORM's compilation of
    the same query cost more CPU than the database's answer."""
    with connection.cursor() as cursor:
        cursor.execute(_stamp_sql())
        row = cursor.fetchone()
    return tuple(row) if row else (0, None)


@cache
def _stamp_sql() -> str:
    qn = connection.ops.quote_name
    meta = ConfigVersion._meta
    columns = ", ".join(qn(meta.get_field(f).column) for f in ("version", "changed_at"))
    return f"SELECT {columns} FROM {qn(meta.db_table)} WHERE {qn(meta.pk.column)} = 1"  # noqa: S608


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


def org_changes_after(until: int, org_ids) -> list[tuple[int, str]]:
    """(org id, ref) of the ``org`` changes of these orgs after version ``until``."""
    return list(
        ConfigChange.objects.filter(
            version__gt=until, kind=ORG, org_id__in=list(org_ids)
        ).values_list("org_id", "ref")
    )


def shared_deltas(since: int, until: int) -> list[bytes] | None:
    """The stored deltas of every version in (since, until], in order, or None when any
    is missing (not stored yet, too large, pruned): then the reader builds the delta."""
    if until <= since:
        return None
    rows = list(
        ConfigChange.objects.filter(version__gt=since, version__lte=until, delta__isnull=False)
        .order_by("version")
        .values_list("delta", flat=True)
    )
    if len(rows) != until - since:
        return None
    return [bytes(r) for r in rows]


def store_delta(version: int, delta: bytes) -> bool:
    """Keep the serialised delta of ``version`` on its change row (the row still there)."""
    return bool(ConfigChange.objects.filter(version=version).update(delta=delta))
