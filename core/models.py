from django.db import models


class ConfigVersion(models.Model):
    """A single counter; bumped in the same transaction as any change workers must see."""

    version = models.PositiveBigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"config version {self.version}"
