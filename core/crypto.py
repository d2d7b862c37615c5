"""Encryption at rest for secrets (provider credentials, SSO SP keys): Fernet; several keys
allow rotation."""

import base64
import hashlib
import json
from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


@cache
def _fernet() -> MultiFernet:
    keys = settings.ENCRYPTION_KEYS or [
        # Derived from SECRET_KEY when no dedicated key is configured.
        base64.urlsafe_b64encode(
            hashlib.sha256(b"bonito-credentials:" + settings.SECRET_KEY.encode()).digest()
        ).decode()
    ]
    return MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])


def seal(data: bytes) -> bytes:
    """``data`` encrypted with the credentials' keys (any document that holds credentials)."""
    return _fernet().encrypt(data)


def unseal(token: bytes) -> bytes:
    return _fernet().decrypt(token)


def encrypt_json(data: dict) -> str:
    return seal(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    return json.loads(unseal(token.encode()))
