"""The batch-first executor interface shared by every platform adapter."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

from platforms.types import (
    Change,
    ChangeOutcome,
    ConnectionConfig,
    EntityRef,
    EntityState,
    ErrorCode,
    Field,
    OutcomeStatus,
    PerformanceRow,
    PlatformCallError,
    PlatformError,
)

Throttle = Callable[[int], None]
"""Called before every platform request with what it costs in the platform's own units
(operations for Google Ads, points for Meta: 3 per write); it blocks until the
connection's rate limiter allows the request, or raises ``PlatformCallError`` when a
daily budget is spent (see platforms.ratelimit and platforms.quota)."""


def no_throttle(_operations: int) -> None:
    return None


BeforeWrite = Callable[[Sequence[Change]], None]
"""Called with the exact changes of each write request (not validate-only), after the
throttle and immediately before the request is sent; an executor that sends several
requests at once (Meta's waves) calls it once with all of their changes. It may raise to stop the send
(the engine's lease fence); the exception propagates out of ``apply``."""


def no_before_write(_changes: Sequence[Change]) -> None:
    return None


class PlatformExecutor(abc.ABC):
    """Reads and writes many entities of one account in as few requests as possible.

    Guarantees every adapter keeps:
    - ``read_state`` returns the live state of the entities that exist; entities the
      platform does not know (deleted, wrong id) are absent from the mapping. It raises
      ``PlatformCallError`` when the read itself failed (safe to retry).
    - ``apply`` never raises for platform errors: it returns one ``ChangeOutcome`` per
      change, in the order given. Whole-request failures are copied onto every change of
      that request; a timeout after sending yields ``OutcomeStatus.UNKNOWN``.
      With ``validate_only`` nothing changes on the platform and successful outcomes are
      ``VALIDATED``.
    - Money crosses the interface as ``Decimal`` in the account currency; values the
      platform cannot represent exactly fail with ``invalid_value`` and are never sent.
    - Requests respect the platform's batch limits, and ``throttle`` is called before
      each request; ``before_write`` is called with each write request's changes right
      before it is sent (once for requests sent together).
    - A write request's deadline (``config.request_timeout``) runs from *before*
      ``before_write`` (which commits the engine's ``request_sent``), and a request whose
      deadline passed before it left is not sent (``begin_write``). Google is sent what
      is left of it as the gRPC timeout, and the sandbox does not commit after it; Meta's
      Graph API takes no deadline, so there only the send is bounded. The reconciler
      waits ``request_timeout`` (+1 s) after ``request_sent`` before reading the platform.
    """

    platform: str = ""
    max_operations_per_request: int = 1
    supported_fields: frozenset[Field] = frozenset()
    # Rate-limit tokens one executed change costs over its read before, write and read
    # back where the platform's limit counts operations (Meta's points); 0 where it counts
    # requests, so the number of changes in flight does not matter to it.
    tokens_per_change: float = 0.0

    def __init__(
        self, config: ConnectionConfig, *, throttle: Throttle = no_throttle, before_write: BeforeWrite = no_before_write
    ) -> None:
        self.config = config
        self.throttle = throttle
        self.before_write = before_write
        self.round_trips = 0  # requests sent, for logs and benchmarks

    @abc.abstractmethod
    def read_state(self, refs: Iterable[EntityRef]) -> dict[tuple[str, str], EntityState]:
        """Live state keyed by ``EntityRef.key``."""

    @abc.abstractmethod
    def apply(self, changes: Sequence[Change], *, validate_only: bool = False) -> list[ChangeOutcome]:
        """Apply absolute changes; one outcome per change, same order."""

    @abc.abstractmethod
    def list_entities(self) -> list[EntityState]:
        """Every campaign and ad set/ad group (and ad where supported) of the account."""

    def read_performance(self, since: date, until: date) -> list[PerformanceRow]:
        """Daily delivery of the account's campaigns and ad sets between two dates (inclusive).

        Adapters that cannot report performance raise ``NotImplementedError``; sync then
        mirrors entities only.
        """
        raise NotImplementedError(f"{self.platform} does not report performance yet")

    def account_facts(self) -> dict[str, Any]:
        """Facts about the account that planning needs before anything is sent (Google's
        billable unit, Meta's minimum budgets), for sync to keep on the connection.
        Raises ``PlatformCallError`` when they cannot be read."""
        return {}

    def test_connection(self) -> str:
        """Read the account; return a short description or raise ``PlatformCallError``."""
        entities = self.list_entities()
        return f"{self.platform} account {self.config.account_id}: {len(entities)} entities readable"

    def rollback_changes(self, before: EntityState, applied: Sequence[Change]) -> list[Change]:
        """Changes that put back ``before``'s value for every field ``applied`` touched."""
        restore: list[Change] = []
        for change in applied:
            restore.append(
                Change(ref=change.ref, field=change.field, value=before.value_of(change.field), key=change.key)
            )
        return restore

    # Helpers for adapters -------------------------------------------------------------

    def begin_write(self, changes: Sequence[Change]) -> float:
        """Start one write request's deadline, fence it (``before_write``), and return the
        ``time.monotonic()`` its deadline runs from.

        A worker paused (or stalled) inside the fence for the whole timeout sends nothing:
        this raises a non-ambiguous ``PlatformCallError`` (the request provably did not
        leave), so a change can never reach the platform long after ``request_sent``.
        """
        started = time.monotonic()
        self.before_write(changes)
        if self.seconds_left(started) <= 0:
            raise PlatformCallError(
                PlatformError(
                    code=ErrorCode.TRANSIENT,
                    message=f"Not sent: the request's {self.config.request_timeout:g}s deadline passed "
                    "before it could leave (the worker was paused).",
                )
            )
        return started

    def seconds_left(self, started: float) -> float:
        """What remains of a request's deadline that started at ``started``."""
        return self.config.request_timeout - (time.monotonic() - started)

    def unsupported(self, change: Change) -> ChangeOutcome | None:
        """A NOT_SUPPORTED outcome when this adapter cannot write ``change.field``."""
        if change.field in self.supported_fields:
            return None
        return ChangeOutcome(
            change=change,
            status=OutcomeStatus.FAILED,
            error=PlatformError(
                code=ErrorCode.NOT_SUPPORTED,
                message=f"{change.field} cannot be changed on {self.platform} by BudgetRadar "
                f"({change.ref.entity_type} {change.ref.external_id}).",
            ),
        )


def failed_outcomes(changes: Sequence[Change], error: PlatformError, *, ambiguous: bool = False) -> list[ChangeOutcome]:
    """The same whole-request error for each change of a request."""
    status = OutcomeStatus.UNKNOWN if ambiguous else OutcomeStatus.FAILED
    return [ChangeOutcome(change=c, status=status, error=error, request_id=error.request_id) for c in changes]


def chunked(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
