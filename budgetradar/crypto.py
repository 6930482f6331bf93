"""Encryption at rest for platform credentials (Fernet, rotation with MultiFernet)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.query_utils import DeferredAttribute


@lru_cache(maxsize=8)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS holds a key that is not a valid Fernet key: {exc}") from None


def cipher() -> MultiFernet:
    """The current cipher: the first key encrypts, every key decrypts."""
    return _multifernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt_json(value: dict[str, Any]) -> str:
    return cipher().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict[str, Any]:
    try:
        return json.loads(cipher().decrypt(token.encode()))
    except InvalidToken:
        raise ImproperlyConfigured(
            "Stored credentials cannot be decrypted with FIELD_ENCRYPTION_KEYS: a key that encrypted "
            "them was removed. Put the old key back at the end of the list."
        ) from None


def rotate_token(token: str) -> str:
    """Re-encrypt a token with the first (newest) key."""
    return cipher().rotate(token.encode()).decode()


class _DecryptOnAccess(DeferredAttribute):
    """Keeps the ciphertext loaded from the database and decrypts it on first access.

    Thousands of rows that merely join a connection (entities, actions) must not each pay
    a Fernet decryption; only code that reads ``credentials`` does. A data descriptor
    (it defines ``__set__``), so every read passes through here; deferred loading still
    works through ``DeferredAttribute``.
    """

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, str):
            value = decrypt_json(value) if value else {}
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = value


class EncryptedJSONField(models.TextField):
    """A dict stored as a Fernet token. The database only ever sees ciphertext."""

    description = "Encrypted JSON"

    descriptor_class = _DecryptOnAccess

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        return value or ""  # still a token: decrypted by the descriptor when read

    def to_python(self, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        if not value:
            return {}
        return decrypt_json(value)

    def get_prep_value(self, value: Any) -> str:
        if not value:
            return ""
        if isinstance(value, str):
            return value  # already a token (loaded and untouched, or rotated)
        return encrypt_json(value)
