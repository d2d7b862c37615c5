"""Encryption at rest for secrets (provider credentials, SSO SP keys): Fernet; several keys
allow rotation."""

import base64
import hashlib
import hmac
import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
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


def sealed_by_newest(token: str) -> bool:
    """Whether ``token`` was encrypted with the newest key (the one seal() writes with):
    anything that can read a document this process seals can read it too."""
    try:
        _fernet()._fernets[0].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def resealed(token: str) -> str | None:
    """``token`` encrypted again with the newest key (its content unchanged), or None when
    no key of this process decrypts it."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        return None


def seal(data: bytes) -> bytes:
    """``data`` encrypted with the credentials' keys (any document that holds credentials)."""
    return _fernet().encrypt(data)


def unseal(token: bytes) -> bytes:
    return _fernet().decrypt(token)


def encrypt_json(data: dict) -> str:
    return seal(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    return json.loads(unseal(token.encode()))


def secrets_fingerprints() -> tuple[str, list[str]]:
    """One-way digests (HMACs of a fixed text: they tell nothing of the secrets) of what keys
    and credentials are written under: KEY_HASH_SECRET's, and each credentials encryption
    key's, newest first. Two processes agree on keys when the first is the same, and one
    can read the credentials another writes when the writer's newest key's digest is among
    the reader's."""
    label = b"bonito-secrets-fingerprint"

    def digest(key: bytes, size: int) -> str:
        return hmac.new(key, label, hashlib.sha256).hexdigest()[:size]

    return digest(settings.KEY_HASH_SECRET.encode(), 32), [digest(k, 16) for k in _keys()]
