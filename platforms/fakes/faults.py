"""Fault injection shared by the local fake servers (tests and benchmarks only).

The fault kinds are the sandbox's (``platforms.sandbox.faults``); the fakes reuse them,
so a test can inject "rate limit twice, then succeed" the same way on every platform.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass

from platforms.sandbox.faults import FaultKind, FaultScope

__all__ = ["Fault", "FaultKind", "FaultPlan", "FaultScope"]


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

    def take(self, scope: FaultScope, entity_ids: Collection[str] | None = None) -> Fault | None:
        """Consume and return the first fault that applies to a request of ``scope``.

        When the request names the entities it touches (``entity_ids``), a fault aimed at
        other entities is left for the request that touches them: with several requests
        in flight at once (Meta's write waves) the first to arrive must not consume a
        fault meant for another. ENTITY_DELETED is exempt: it deletes its entities
        whichever request comes first."""
        touched = None if entity_ids is None else set(entity_ids)
        with self._lock:
            for fault in self._faults:
                if fault.scope not in (FaultScope.ANY, scope):
                    continue
                aimed_elsewhere = (
                    touched is not None
                    and fault.entity_ids is not None
                    and fault.kind != FaultKind.ENTITY_DELETED
                    and not fault.entity_ids & touched
                )
                if aimed_elsewhere:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None
