"""Reads for the gateway's pages and lists that are more than one query: the key list with
each key's spend this month and when it was last used."""

from decimal import Decimal

# billing (above the gateway) plugs in f(org_id) -> {key id: spend this month (USD)} in its
# AppConfig.ready(): billing.spend.key_spend_this_month, from rollups and the live edges.
_key_spend_source = None


def use_key_spend(source) -> None:
    global _key_spend_source
    _key_spend_source = source


def key_spend_this_month(org_id: int) -> dict[int, Decimal]:
    """key id -> what it spent this calendar month (UTC); a key absent spent nothing.
    A fixed number of queries, whatever the number of keys or rows."""
    return _key_spend_source(org_id) if _key_spend_source is not None else {}


def keys_with_spend(keys) -> list:
    """The key rows of one org (a queryset), each with ``spend_this_month`` (Decimal) set:
    one query for the keys and the spend's fixed few, never one per key. ``last_used_at``
    is the key's own column (moved by the usage writer once per batch)."""
    rows = list(keys)
    if not rows:
        return rows
    spend = key_spend_this_month(rows[0].org_id)
    for key in rows:
        key.spend_this_month = spend.get(key.id, Decimal(0))
    return rows
