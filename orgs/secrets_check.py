"""Whether this process writes keys and credentials the server can read
(orgs.models.SecretsFingerprint): the server records its secrets' digests when it starts;
a management command that writes keys or credentials checks them first."""

import logging

from django.core.management.base import CommandError
from django.db import DatabaseError

from core.crypto import secrets_fingerprints

log = logging.getLogger("bonito.secrets")

HOW = (
    " Run it with the server's settings: after `make run`, with DEBUG=1 and no SECRET_KEY, "
    "as `make run` runs. If the server's secrets were changed on purpose, start the server "
    "with them first (it records them), or pass --other-secrets."
)
OTHER_KEY_SECRET = (
    "This command hashes keys under another KEY_HASH_SECRET (SECRET_KEY when it is unset) "
    "than the server that started last: a key it makes would get 401 there." + HOW
)
OTHER_ENCRYPTION = (
    "This command encrypts credentials under a key (the first of ENCRYPTION_KEYS, derived "
    "from SECRET_KEY when it is unset) that the server that started last does not have: "
    "it could not decrypt the credentials this command writes." + HOW
)


def record() -> None:
    """The server's secrets' digests, recorded at its start (a database that is not there
    yet or is down is not an error: the next start records them)."""
    from .models import SecretsFingerprint

    key_hash, encryption = secrets_fingerprints()
    try:
        SecretsFingerprint.objects.update_or_create(
            pk=1, defaults={"key_hash": key_hash, "encryption": ",".join(encryption)}
        )
    except DatabaseError as exc:
        log.warning("could not record the secrets' fingerprint (%s)", type(exc).__name__)


def problem(*, keys: bool = True, credentials: bool = True) -> str | None:
    """Why what this process would write (``keys`` hashed, ``credentials`` encrypted) could
    not be read by the server that started last; None if it could, or if none started."""
    from .models import SecretsFingerprint

    row = SecretsFingerprint.objects.filter(pk=1).first()
    if row is None:
        return None
    key_hash, encryption = secrets_fingerprints()
    if keys and row.key_hash != key_hash:
        return OTHER_KEY_SECRET
    if credentials and encryption[0] not in row.encryption.split(","):
        return OTHER_ENCRYPTION
    return None


def add_argument(parser, help: str = "") -> None:
    """A command's ``--other-secrets``: write though the server last started with others."""
    parser.add_argument(
        "--other-secrets",
        action="store_true",
        help=help
        or "write under this process's secrets though the server last started with "
        "others (orgs.secrets_check)",
    )


def checked(other_secrets: bool = False, *, keys: bool = True, credentials: bool = True) -> None:
    """CommandError where the server could not read what this command writes."""
    said = None if other_secrets else problem(keys=keys, credentials=credentials)
    if said:
        raise CommandError(said)
