"""Reads of the audit log for the dashboard's Audit log page."""

from datetime import UTC, datetime, time

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.dateparse import parse_date, parse_datetime

from orgs.models import AuditLog

TEXT_MAX = 200


def _text(params, name) -> str:
    value = str(params.get(name) or "").strip()
    if "\x00" in value:
        raise ValidationError({name: "must not contain NUL characters."})
    if len(value) > TEXT_MAX:
        raise ValidationError({name: f"is longer than {TEXT_MAX} characters."})
    return value


def _moment(params, name, end=False):
    value = _text(params, name)
    if not value:
        return None
    parsed = None
    if value.isascii():
        try:
            day = parse_date(value) if len(value) == 10 else None
            parsed = None if day else parse_datetime(value)
        except (ValueError, OverflowError):
            parsed = day = None
        if day is not None and 1970 <= day.year < 3000:
            # A day "until" includes that whole day.
            parsed = datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
    if parsed is None or not 1970 <= parsed.year < 3000:
        raise ValidationError(
            {name: f"{value!r} is not a date or ISO 8601 time (e.g. 2026-11-01)."}
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def audit_rows(org, params):
    """The org's audit rows, newest first, filtered by actor (part of the email or label),
    action (a prefix: `key.` is every key change), object (its type, or part of its name or
    its id) and time (since, until: dates or ISO times)."""
    qs = AuditLog.objects.for_org(org).select_related(None)
    actor = _text(params, "actor")
    action = _text(params, "action")
    target_type = _text(params, "object_type")
    target = _text(params, "object")
    since = _moment(params, "since")
    until = _moment(params, "until", end=True)
    if since and until and since > until:
        raise ValidationError({"since": "'since' must be before 'until'."})
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lte=until)
    if actor:
        qs = qs.filter(actor_label__icontains=actor)
    if action:
        qs = qs.filter(action__startswith=action)
    if target_type:
        qs = qs.filter(target_type=target_type)
    if target:
        qs = qs.filter(Q(target_repr__icontains=target) | Q(target_id=target))
    return qs


def audit_object_types(org) -> list[str]:
    return list(
        AuditLog.objects.for_org(org)
        .order_by("target_type")
        .values_list("target_type", flat=True)
        .distinct()
    )
