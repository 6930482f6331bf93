"""Talking to a platform on the engine's behalf: retries, backoff, ambiguity, long waits.

``PlatformRunner`` wraps one executor and adds the engine's retry policy:
- reads that fail retryably are retried with exponential backoff and jitter, never
  sooner than the platform's retry-after;
- writes that fail retryably are retried the same way, only for the changes that
  failed (absolute values, so a retry cannot double anything);
- a write whose outcome is unknown (timeout after sending) is first reconciled by
  reading the platform: if the target value is there it counts as applied, otherwise
  it is retried once at most, then failed with a reason;
- a wait longer than ``park_after`` (a rate-limit block of minutes or an hour) is not
  slept: the changes come back ``FAILED`` with the rate-limit error and its
  ``retry_after``, provably not applied, for the engine to park until then;
- permanent errors are returned at once.
Everything is bounded: at most ``policy.max_attempts`` tries per change. Every retry,
wait and ambiguity check is reported to the ``observer`` (the engine writes them into
each action's execution log), so the timeline shows what really happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from django.conf import settings

from actions.services.verification import same_value
from observability.metrics import rate_limit_wait_record
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


class RunnerObserver(Protocol):
    def retrying(self, *, subjects: Sequence[Any], error: PlatformError, delay: float, attempt: int) -> None: ...

    def outcome_checked(self, *, change: Change, applied: bool | None) -> None: ...


class _Silent:
    def retrying(self, **_kwargs) -> None:
        return None

    def outcome_checked(self, **_kwargs) -> None:
        return None


@dataclass
class RunnerStats:
    retries: int = 0
    reconciled: int = 0
    waited_seconds: float = 0.0


def park_after_seconds() -> float:
    return float(settings.ENGINE_PARK_AFTER_SECONDS)


def is_parkable(error: PlatformError | None) -> bool:
    """A refusal that applied nothing and asks to wait longer than a worker should hold."""
    return (
        error is not None and error.code == ErrorCode.RATE_LIMITED and (error.retry_after or 0.0) > park_after_seconds()
    )


class PlatformRunner:
    def __init__(
        self,
        executor: PlatformExecutor,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_rate_limited: Callable[[PlatformError], None] | None = None,
        observer: RunnerObserver | None = None,
    ) -> None:
        self.executor = executor
        # Tells every worker on the connection to hold back (the shared token bucket).
        self.on_rate_limited = on_rate_limited or (lambda _error: None)
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.observer = observer or _Silent()
        self.stats = RunnerStats()
        self.try_number = 1  # of the write being sent, for the execution log

    @property
    def round_trips(self) -> int:
        return self.executor.round_trips

    def read(self, refs: Iterable[EntityRef]) -> dict[tuple[str, str], EntityState]:
        """Live state; raises ``PlatformCallError`` once retries are exhausted or the
        platform asks for a wait longer than ``park_after`` (then nothing is slept)."""
        refs = list(dict.fromkeys(refs))
        if not refs:
            return {}

        def on_retry(attempt: int, exc: PlatformCallError, delay: float) -> None:
            self._rate_limited([exc.error])
            self.observer.retrying(subjects=refs, error=exc.error, delay=delay, attempt=attempt)

        policy = replace(self.policy, max_delay=min(self.policy.max_delay, park_after_seconds()))
        try:
            return with_retries(
                lambda: self.executor.read_state(refs), policy=policy, sleep=self._wait, on_retry=on_retry
            )
        except PlatformCallError as exc:
            self._rate_limited([exc.error])
            raise

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
            self.try_number = attempt
            outcomes = self.executor.apply([changes[i] for i in pending], validate_only=validate_only)
            retry: dict[int, ChangeOutcome] = {}
            for index, outcome in zip(pending, outcomes, strict=True):
                if is_parkable(outcome.error):
                    final[index] = outcome  # not applied; the engine parks it until retry_after
                elif outcome.status == OutcomeStatus.UNKNOWN or (outcome.error and outcome.error.retryable):
                    retry[index] = outcome
                else:
                    final[index] = outcome
            self._rate_limited([o.error for o in outcomes if o.error])
            resolved = self._reconcile_unknown(changes, retry, unknown_seen)
            final.update(resolved)
            retry = {i: o for i, o in retry.items() if i not in resolved}
            pending = self._schedule_retry(retry, final, attempt)
        self.try_number = 1
        return [final[i] for i in range(len(changes))]

    # Internals --------------------------------------------------------------------------

    def _rate_limited(self, errors: Iterable[PlatformError]) -> None:
        """An account-wide rate limit holds back every worker on the connection; an
        entity-level one (Meta's budget-change limit) only that entity."""
        for error in errors:
            if error.code == ErrorCode.RATE_LIMITED and error.retry_after and _scope(error) == "account":
                self.on_rate_limited(error)
                return

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
            for index in ambiguous:
                self.observer.outcome_checked(change=changes[index], applied=None)
            return {i: outcomes[i] for i in ambiguous}
        resolved: dict[int, ChangeOutcome] = {}
        for index in ambiguous:
            change, outcome = changes[index], outcomes[index]
            state = live.get(change.ref.key)
            applied = state is not None and same_value(change.field, state.value_of(change.field), change.value)
            self.observer.outcome_checked(change=change, applied=applied)
            if applied:
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
        if attempt >= self.policy.max_attempts:
            for index, outcome in retry.items():
                final[index] = _give_up(outcome, attempt)
            return []
        self.stats.retries += len(retry)
        delay = self.policy.delay(attempt, retry_after or None)
        first_error = next((o.error for o in retry.values() if o.error), None)
        if first_error is not None:
            subjects = [o.change for o in retry.values()]
            self.observer.retrying(subjects=subjects, error=first_error, delay=delay, attempt=attempt)
            if first_error.code == ErrorCode.RATE_LIMITED:
                rate_limit_wait_record(platform=self.executor.platform, seconds=delay, source="retry_after")
        self._wait(delay)
        return sorted(retry)

    def _wait(self, seconds: float) -> None:
        self.stats.waited_seconds += seconds
        self.sleep(seconds)


def _scope(error: PlatformError) -> str:
    return getattr(error, "scope", "account") or "account"


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
