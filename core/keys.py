"""bn-/rt- key format: random body plus checksum, so garbage is refused without a lookup."""

import hashlib
import hmac
import secrets
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LEN = 32  # 32 base62 chars ≈ 190 random bits
CHECK_LEN = 6  # CRC32 in base62


def _b62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(ALPHABET[rem])
    return "".join(reversed(out))


def _checksum(prefix: str, body: str) -> str:
    return _b62(zlib.crc32(f"{prefix}{body}".encode()), CHECK_LEN)


def generate(prefix: str = "bn-") -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LEN))
    return f"{prefix}{body}{_checksum(prefix, body)}"


def well_formed(raw: str, prefixes: tuple[str, ...] = ("bn-", "rt-")) -> bool:
    """Cheap structural check; a typo or a random string fails here."""
    prefix = next((p for p in prefixes if raw.startswith(p)), None)
    if prefix is None or len(raw) != len(prefix) + BODY_LEN + CHECK_LEN:
        return False
    body, check = raw[len(prefix) : -CHECK_LEN], raw[-CHECK_LEN:]
    if any(c not in ALPHABET for c in body):
        return False
    return hmac.compare_digest(check, _checksum(prefix, body))


def digest(raw: str, secret: bytes) -> str:
    """HMAC-SHA256 of a key; the only form in which keys are stored."""
    return hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()


def display(raw: str) -> tuple[str, str]:
    """(prefix, last4) for showing a key after creation: 'bn-AbCd…wxyz'."""
    dash = raw.index("-") + 1
    return raw[: dash + 4], raw[-4:]
