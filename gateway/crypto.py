"""Provider credentials are encrypted with the shared helper in core.crypto."""

from core.crypto import decrypt_json, encrypt_json

__all__ = ["decrypt_json", "encrypt_json"]
