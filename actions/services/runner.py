"""Talking to a platform on the engine's behalf: retries, backoff and ambiguity.

``PlatformRunner`` wraps one executor and adds the engine's retry policy:
- reads that fail retryably are retried with exponential backoff and jitter, never
  sooner than the platform's retry-after;
- writes that fail retryably are retried the same way, only for the changes that
  failed (absolute values, so a retry cannot double anything);
- a write whose outcome is unknown (timeout after sending) is first reconciled by
  reading the platform: if the target value is there it counts as applied, otherwise
  it is retried once at most, then failed with a reason;
- permanent errors are returned at once.
Everything is bounded: at most ``policy.max_attempts`` tries per change and no single
wait longer than ``policy.max_delay`` (a longer retry-after fails the change with the
platform's rate-limit error instead of blocking a worker).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from actions.services.verification import same_value
from platforms.base import PlatformExecutor
from platforms.retry import RetryPolicy, with_retries
from platforms.types import (
    Change,
    ChangeOutcome,
    EntityRef,
    EntityState,
    ErrorCode,
    OutcomeStatus,
    PlatformCallError,
    PlatformError,
)


@dataclass
class RunnerStats:
    retries: int = 0
    reconciled: int = 0
    waited_seconds: float = 0.0


class PlatformRunner:
    def __init__(
        self,
        executor: PlatformExecutor,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[], None] | None = None,
        on_rate_limited: Callable[[float], None] | None = None,
    ) -> None:
        self.executor = executor
        # Tells every worker on the connection to hold back (the shared token bucket).
        self.on_rate_limited = on_rate_limited or (lambda _seconds: None)
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.on_wait = on_wait or (lambda: None)
        self.stats = RunnerStats()

    @property
    def round_trips(self) -> int:
        return self.executor.round_trips

    def read(self, refs: Iterable[EntityRef]) -> dict[tuple[str, str], EntityState]:
        """Live state; raises ``PlatformCallError`` once retries are exhausted."""
        refs = list(dict.fromkeys(refs))
        if not refs:
            return {}
        return with_retries(lambda: self.executor.read_state(refs), policy=self.policy, sleep=self._wait)

    def apply(self, changes: Sequence[Change], *, validate_only: bool = False) -> list[ChangeOutcome]:
        """One final outcome per change, same order.

        An outcome stays UNKNOWN only when the platform could not even be read to
        resolve it; the caller must then leave the action for the reconciler.
        """
        final: dict[int, ChangeOutcome] = {}
        pending = list(range(len(changes)))
        unknown_seen: set[int] = set()
        attempt = 0
        while pending:
            attempt += 1
            outcomes = self.executor.apply([changes[i] for i in pending], validate_only=validate_only)
            retry: dict[int, ChangeOutcome] = {}
            for index, outcome in zip(pending, outcomes, strict=True):
                if outcome.status == OutcomeStatus.UNKNOWN or (outcome.error and outcome.error.retryable):
                    retry[index] = outcome
                else:
                    final[index] = outcome
            resolved = self._reconcile_unknown(changes, retry, unknown_seen)
            final.update(resolved)
            retry = {i: o for i, o in retry.items() if i not in resolved}
            pending = self._schedule_retry(retry, final, attempt)
        return [final[i] for i in range(len(changes))]

    # Internals --------------------------------------------------------------------------

    def _reconcile_unknown(self, changes, outcomes, unknown_seen) -> dict[int, ChangeOutcome]:
        """Read the platform for ambiguous outcomes before any retry.

        Target present -> applied. Absent -> retried once (it was not applied, so the
        retry is the first application); absent again -> failed. Unreadable -> stays
        unknown, never retried blindly.
        """
        ambiguous = [i for i, o in outcomes.items() if o.status == OutcomeStatus.UNKNOWN]
        if not ambiguous:
            return {}
        try:
            live = self.read(changes[i].ref for i in ambiguous)
        except PlatformCallError:
            return {i: outcomes[i] for i in ambiguous}
        resolved: dict[int, ChangeOutcome] = {}
        for index in ambiguous:
            change, outcome = changes[index], outcomes[index]
            state = live.get(change.ref.key)
            if state is not None and same_value(change.field, state.value_of(change.field), change.value):
                self.stats.reconciled += 1
                resolved[index] = replace(outcome, status=OutcomeStatus.APPLIED, error=None)
            elif index in unknown_seen:
                resolved[index] = _timed_out_twice(outcome)
            else:
                unknown_seen.add(index)
        return resolved

    def _schedule_retry(self, retry: dict[int, ChangeOutcome], final, attempt: int) -> list[int]:
        if not retry:
            return []
        retry_after = max((o.error.retry_after or 0.0 for o in retry.values() if o.error), default=0.0)
        if any(o.error and o.error.code == ErrorCode.RATE_LIMITED for o in retry.values()) and retry_after:
            self.on_rate_limited(retry_after)
        if self.policy.gives_up(attempt, retry_after):
            for index, outcome in retry.items():
                final[index] = _give_up(outcome, attempt)
            return []
        self.stats.retries += len(retry)
        self._wait(self.policy.delay(attempt, retry_after or None))
        return sorted(retry)

    def _wait(self, seconds: float) -> None:
        self.on_wait()
        self.stats.waited_seconds += seconds
        self.sleep(seconds)


def _timed_out_twice(outcome: ChangeOutcome) -> ChangeOutcome:
    error = PlatformError(
        code=ErrorCode.TRANSIENT,
        message="The platform timed out twice and its live value shows the change was not applied.",
        request_id=outcome.request_id,
    )
    return replace(outcome, status=OutcomeStatus.FAILED, error=error)


def _give_up(outcome: ChangeOutcome, attempts: int) -> ChangeOutcome:
    """Retries exhausted. An unknown outcome was read as not applied, so it is a failure."""
    error = outcome.error or PlatformError(code=ErrorCode.TRANSIENT, message="No answer from the platform.")
    message = f"{error.message} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})"
    return replace(outcome, status=OutcomeStatus.FAILED, error=replace(error, message=message))
