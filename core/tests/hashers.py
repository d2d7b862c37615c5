"""The test suite's password hasher.

Django's PBKDF2-SHA256 at its default 1,000,000 iterations costs ~0.5 s of CPU per hash on
this machine kind, and the suite creates thousands of users: most of its CPU went into
hashing. The suite stores passwords with the same algorithm and format (``pbkdf2_sha256$…``)
at 1,000 iterations; production keeps Django's default (bonito/settings.py sets none).
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000
