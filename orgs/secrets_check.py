"""Whether this process writes keys and credentials under the secrets the server reads them
with (orgs.models.SecretsFingerprint): the server records its own when it starts; a
management command that writes them checks it first."""

import logging

from django.core.management.base import CommandError
from django.db import DatabaseError

from core.crypto import secrets_fingerprint

log = logging.getLogger("bonito.secrets")

OTHER_SECRETS = (
    "This command runs with other secrets (SECRET_KEY, KEY_HASH_SECRET or ENCRYPTION_KEYS) "
    "than the server that started last: the keys and credentials it would write could not "
    "be read by that server (a key it printed would get 401, a provider's credentials "
    "could not be decrypted). Run it with the server's settings: after `make run`, with "
    "DEBUG=1 and no SECRET_KEY, as `make run` runs. If the server's secrets were changed on "
    "purpose, start the server with them first (it records them), or pass --other-secrets."
)


def record() -> None:
    """The server's secrets' fingerprint, recorded at its start (a database that is not
    there yet or is down is not an error: the next start records it)."""
    from .models import SecretsFingerprint

    try:
        SecretsFingerprint.objects.update_or_create(pk=1, defaults={"value": secrets_fingerprint()})
    except DatabaseError as exc:
        log.warning("could not record the secrets' fingerprint (%s)", type(exc).__name__)


def checked(other_secrets: bool = False) -> None:
    """CommandError where a server recorded other secrets than this process's."""
    from .models import SecretsFingerprint

    recorded = SecretsFingerprint.objects.filter(pk=1).values_list("value", flat=True).first()
    if recorded and recorded != secrets_fingerprint() and not other_secrets:
        raise CommandError(OTHER_SECRETS)
