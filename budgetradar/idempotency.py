"""Idempotent requests (DESIGN.md section 7).

``run_idempotent`` runs an operation at most once per (tenant, key): a replay with the
same request returns the first answer; the same key with a different request is a 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from budgetradar.errors import Conflict, ValidationFailed
from budgetradar.models import IdempotencyRecord, Tenant

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class IdempotentResult:
    response: Any
    status_code: int
    replayed: bool


def fingerprint(scope: str, request: Any) -> str:
    """A stable hash of what was asked (canonical JSON: key order does not matter)."""
    canonical = json.dumps({"scope": scope, "request": request}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def clean_key(key: Any) -> str:
    """Validate a client-supplied key (any printable string up to 200 characters)."""
    if not isinstance(key, str) or not key.strip():
        raise ValidationFailed("idempotency_key must be a non-empty string.", details={"idempotency_key": "required"})
    key = key.strip()
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"idempotency_key must be at most {MAX_KEY_LENGTH} printable characters.",
            details={"idempotency_key": "invalid"},
        )
    return key


def run_idempotent(
    *,
    tenant: Tenant,
    key: str,
    scope: str,
    request: Any,
    actor,
    operation: Callable[[], tuple[Any, int]],
) -> IdempotentResult:
    """Run ``operation`` (returning a JSON-safe answer and an HTTP status) once per key.

    Guarantees: the key row and everything ``operation`` writes commit together, so a
    crash leaves neither; a concurrent duplicate blocks on the unique index until the
    first commits, then replays its answer; a different request under the same key
    raises ``Conflict`` without running anything. Domain errors raised by ``operation``
    are not stored: the caller may fix the cause and retry with the same key.
    """
    digest = fingerprint(scope, request)
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                tenant=tenant,
                key=key,
                scope=scope,
                fingerprint=digest,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
            response, status_code = operation()
            record.response, record.status_code = response, status_code
            record.save(update_fields=["response", "status_code"])
            return IdempotentResult(response=response, status_code=status_code, replayed=False)
    except IntegrityError:
        existing = IdempotencyRecord.objects.filter(tenant=tenant, key=key).first()
        if existing is None:
            raise  # the integrity error came from the operation itself
        return _replay(existing, scope=scope, digest=digest)


def idempotent_lookup(*, tenant: Tenant, key: str, scope: str, request: Any) -> IdempotentResult | None:
    """The stored answer for this key (``Conflict`` if it was a different request), or None.

    For operations that must do slow work (platform calls) before their short write:
    look up first, do the work outside any transaction, then ``run_idempotent`` the write;
    a concurrent duplicate that finished first is then replayed instead.
    """
    record = IdempotencyRecord.objects.filter(tenant=tenant, key=key).first()
    if record is None or record.response is None:
        return None
    return _replay(record, scope=scope, digest=fingerprint(scope, request))


def _replay(record: IdempotencyRecord, *, scope: str, digest: str) -> IdempotentResult:
    if record.scope != scope or record.fingerprint != digest:
        raise Conflict(
            f"The idempotency key {record.key!r} was already used for a different request "
            f"({record.scope}). Use a new key for a new request.",
            code="idempotency_key_reused",
        )
    return IdempotentResult(response=record.response, status_code=record.status_code or 200, replayed=True)
