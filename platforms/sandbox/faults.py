"""The kinds of fault the sandbox platform can inject, and the requests they hit.

The sandbox persists faults in ``SandboxFault``; the local fake servers used by tests
(``platforms.fakes``) speak the same vocabulary, so a test injects "rate limit twice,
then succeed" the same way on every platform. These enums belong to the sandbox, a
product module: nothing in the product imports from ``platforms.fakes``.
"""

from __future__ import annotations

import enum


class FaultKind(enum.StrEnum):
    RATE_LIMIT = "rate_limit"  # refuse with the platform's rate-limit error and a retry-after
    SERVER_ERROR = "server_error"  # 5xx / INTERNAL / UNAVAILABLE
    TIMEOUT_BEFORE_APPLY = "timeout_before_apply"  # hang past the client timeout, apply nothing
    TIMEOUT_AFTER_APPLY = "timeout_after_apply"  # apply, then hang past the client timeout
    AUTH_EXPIRED = "auth_expired"  # the token is refused
    PERMISSION_DENIED = "permission_denied"
    ENTITY_DELETED = "entity_deleted"  # the targeted entities are removed before the call
    PARTIAL_FAILURE = "partial_failure"  # the targeted entities fail with invalid value, others apply
    INVALID_VALUE = "invalid_value"  # the whole write is refused as an invalid value
    CONFLICT = "conflict"  # concurrent modification
    SILENT_NOOP = "silent_noop"  # report success but change nothing (Meta has done this)
    HTML_502 = "html_502"  # an HTML error page instead of JSON (Meta proxies)


class FaultScope(enum.StrEnum):
    ANY = "any"
    READ = "read"
    WRITE = "write"
