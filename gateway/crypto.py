"""Provider credentials are encrypted with the shared helper in bonito.crypto."""

from bonito.crypto import decrypt_json, encrypt_json

__all__ = ["decrypt_json", "encrypt_json"]
