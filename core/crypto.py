"""Encryption at rest for secrets (provider credentials, SSO SP keys): Fernet; several keys
allow rotation."""

import base64
import hashlib
import hmac
import json
from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


def _keys() -> list[bytes]:
    keys = settings.ENCRYPTION_KEYS or [
        # Derived from SECRET_KEY when no dedicated key is configured.
        base64.urlsafe_b64encode(
            hashlib.sha256(b"bonito-credentials:" + settings.SECRET_KEY.encode()).digest()
        ).decode()
    ]
    return [k.encode() if isinstance(k, str) else k for k in keys]


@cache
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(k) for k in _keys()])


def seal(data: bytes) -> bytes:
    """``data`` encrypted with the credentials' keys (any document that holds credentials)."""
    return _fernet().encrypt(data)


def unseal(token: bytes) -> bytes:
    return _fernet().decrypt(token)


def encrypt_json(data: dict) -> str:
    return seal(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    return json.loads(unseal(token.encode()))


def secrets_fingerprint() -> str:
    """A digest of the secrets keys and credentials are written under (KEY_HASH_SECRET and
    the credentials' encryption keys): the same in two processes only when what one writes
    the other can read. One-way (HMACs of a fixed text): it tells nothing of the secrets."""
    keys = [settings.KEY_HASH_SECRET.encode(), *_keys()]
    text = b"".join(
        hmac.new(k, b"bonito-secrets-fingerprint", hashlib.sha256).digest() for k in keys
    )
    return hashlib.sha256(text).hexdigest()[:32]
