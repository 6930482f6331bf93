"""Retrying platform calls that failed transiently: exponential backoff with full jitter.

Only for calls that are safe to repeat: reads, and writes whose outcome is known not to
have been applied. An ambiguous failure (a timeout after the request was sent) is never
retried here; the engine first reads the platform to find out what happened.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from platforms.types import PlatformCallError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_attempts`` calls in total; waits grow as ``base_delay * 2^(n-1)``,
    drawn uniformly below that ceiling (full jitter), capped at ``max_delay``.

    A platform's Retry-After is a floor: the wait is never shorter. When Retry-After is
    longer than ``max_delay`` the policy gives up rather than block a worker that long.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"Invalid retry policy: {self}")

    def gives_up(self, attempt: int, retry_after: float | None = None) -> bool:
        """True when failed attempt number ``attempt`` (1-based) should be the last."""
        return attempt >= self.max_attempts or (retry_after is not None and retry_after > self.max_delay)

    def delay(
        self, attempt: int, retry_after: float | None = None, *, rng: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); never below ``retry_after``."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return max(rng() * ceiling, retry_after or 0.0)


DEFAULT_POLICY = RetryPolicy()


def with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, PlatformCallError, float], None] | None = None,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call ``fn``; on a retryable, unambiguous ``PlatformCallError`` wait and call again.

    Permanent errors, ambiguous errors and the last attempt's error propagate unchanged.
    ``on_retry(attempt, error, delay)`` runs before each wait (logging, shared backoff).
    """
    attempt = 1
    while True:
        try:
            return fn()
        except PlatformCallError as exc:
            if exc.ambiguous or not exc.error.retryable or policy.gives_up(attempt, exc.error.retry_after):
                raise
            wait = policy.delay(attempt, exc.error.retry_after, rng=rng)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
            attempt += 1
