"""The config version: one counter every gateway process polls; bumping it (in the
transaction of a change) makes every process rebuild its snapshot within seconds."""

from django.db.models import F

from .models import ConfigVersion


def config_version_bump() -> None:
    """Call inside the transaction that changes anything the data plane reads."""
    if not ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1):
        ConfigVersion.objects.get_or_create(pk=1, defaults={"version": 1})


def current_version() -> int:
    row = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0


def current_stamp() -> tuple:
    """The version and when it moved: a stamp that changes on every bump, even after a reset."""
    return ConfigVersion.objects.filter(pk=1).values_list("version", "changed_at").first() or (
        0,
        None,
    )
