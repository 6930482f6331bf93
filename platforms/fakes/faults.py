"""Fault injection shared by the local fake servers (tests and benchmarks only).

The sandbox platform persists the same fault kinds in its own tables, so a test can
inject "rate limit twice, then succeed" the same way on every platform.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


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


@dataclass
class Fault:
    """One injected fault. ``remaining`` None means forever; ``entity_ids`` limits which
    entities it hits (for ENTITY_DELETED / PARTIAL_FAILURE / SILENT_NOOP)."""

    kind: FaultKind
    remaining: int | None = 1
    scope: FaultScope = FaultScope.WRITE
    entity_ids: frozenset[str] | None = None
    retry_after: float = 1.0


class FaultPlan:
    """Thread-safe queue of faults a fake consults before each request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.latency_seconds: float = 0.0
        self.hang_seconds: float = 5.0  # how long a "timeout" fault hangs

    def add(
        self,
        kind: FaultKind | str,
        *,
        remaining: int | None = 1,
        scope: FaultScope | str = FaultScope.WRITE,
        entity_ids: list[str] | None = None,
        retry_after: float = 1.0,
    ) -> Fault:
        fault = Fault(
            FaultKind(kind), remaining, FaultScope(scope), frozenset(entity_ids) if entity_ids else None, retry_after
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
        self.latency_seconds = 0.0

    def take(self, scope: FaultScope) -> Fault | None:
        """Consume and return the first fault that applies to a request of ``scope``."""
        with self._lock:
            for fault in self._faults:
                if fault.scope not in (FaultScope.ANY, scope):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None
