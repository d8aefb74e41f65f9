"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under FIELD_ENCRYPTION_KEY.

The setting holds one or more keys, comma-separated: the first encrypts, every one decrypts
(`MultiFernet`), so a key is rotated by putting the new one first, re-encrypting
(`manage.py rotate_encryption_key`), then dropping the old one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "SecretBox", "derive_key", "parse_keys"]


def derive_key(secret: str) -> str:
    """A Fernet key derived from another secret (development only: production sets its own key)."""
    return base64.urlsafe_b64encode(hashlib.sha256(("fernet:" + secret).encode()).digest()).decode()


def parse_keys(raw: str) -> list[str]:
    """The keys of a FIELD_ENCRYPTION_KEY value; raises ValueError, naming which one, if one is not a
    Fernet key (32 url-safe base64-encoded bytes)."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ValueError("no key given")
    for i, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError as exc:
            raise ValueError(
                f"key {i} is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from exc
    return keys


class SecretBox:
    """Encrypts and decrypts short secrets (API keys) with a list of keys, newest first."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plain: str) -> str:
        return "" if not plain else self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Raises `InvalidToken` when no configured key opened it."""
        return "" if not token else self._fernet.decrypt(token.encode()).decode()

    def rotate(self, token: str) -> str:
        """The same secret encrypted under the first key."""
        return "" if not token else self._fernet.rotate(token.encode()).decode()
