"""Domain errors raised by services; the API and admin turn them into answers."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A business rule refused the operation. ``message`` is shown to people as is."""

    code = "refused"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class NotEntitled(DomainError):
    """The tenant's plan does not include this (HTTP 402)."""

    code = "not_entitled"
    http_status = 402


class PermissionDenied(DomainError):
    """The acting user's role does not allow it (HTTP 403)."""

    code = "permission_denied"
    http_status = 403


class NotFound(DomainError):
    """No such object for this tenant (HTTP 404; never reveal other tenants' rows)."""

    code = "not_found"
    http_status = 404


class InvalidState(DomainError):
    """The object is not in a state that allows the operation (HTTP 409)."""

    code = "invalid_state"
    http_status = 409


class Conflict(DomainError):
    """A concurrent or repeated request conflicts with an earlier one (HTTP 409)."""

    code = "conflict"
    http_status = 409


class ValidationFailed(DomainError):
    """Input refused; ``details`` names each field and item (HTTP 400)."""

    code = "invalid"
    http_status = 400
