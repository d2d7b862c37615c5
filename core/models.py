from django.db import models


class ConfigVersion(models.Model):
    """A single counter; bumped in the same transaction as any change workers must see."""

    version = models.PositiveBigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"config version {self.version}"


class ConfigChange(models.Model):
    """One bump of the config version: what it touched, so a gateway that has version V
    applies only the changes after V (core.config_version). No foreign keys: the org or
    key it names may be gone (a delete is a change too)."""

    version = models.PositiveBigIntegerField(unique=True)
    kind = models.CharField(max_length=16)  # core.config_version.KINDS
    org_id = models.BigIntegerField(null=True, blank=True)  # None: not one org's
    ref = models.CharField(max_length=64, blank=True)  # a key id, or a tier name
    created_at = models.DateTimeField(auto_now_add=True)
    # The delta from the version before, serialised and encrypted (core.crypto) once after
    # the commit, so every gateway worker applies it instead of building it from the
    # tables (gateway.snapshot_builder.share_deltas); None until then, or when too large.
    delta = models.BinaryField(null=True, blank=True, editable=False)

    def __str__(self):
        return f"config change {self.version}: {self.kind} {self.org_id or ''} {self.ref}"


def columns_but(instance, *left_out: str) -> list[str]:
    """Every column ``save(update_fields=...)`` may write on ``instance`` but ``left_out``:
    an edit that did not change a secret saves without it, so a rewrite made since the row
    was read (reencrypt_secrets, a key rotation) is not undone by the value read."""
    return [
        f.name
        for f in instance._meta.concrete_fields
        if not f.primary_key and f.name not in left_out
    ]
