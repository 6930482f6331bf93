"""Backoff: exponential with full jitter, bounded, never sooner than the platform asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforms.retry import RetryPolicy, with_retries
from platforms.types import ErrorCode, PlatformCallError, PlatformError


def failure(code: ErrorCode, *, retry_after: float | None = None, ambiguous: bool = False) -> PlatformCallError:
    return PlatformCallError(
        PlatformError(code=code, message=f"{code} from the fake", retry_after=retry_after), ambiguous=ambiguous
    )


class Flaky:
    """Fails with the given errors, then returns "ok"; counts calls."""

    def __init__(self, *errors: PlatformCallError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def slept():
    return []


def test_transient_errors_are_retried_until_the_call_succeeds(slept):
    fn = Flaky(failure(ErrorCode.TRANSIENT), failure(ErrorCode.RATE_LIMITED))
    assert with_retries(fn, sleep=slept.append) == "ok"
    assert fn.calls == 3
    assert len(slept) == 2


@pytest.mark.parametrize(
    "code", [ErrorCode.AUTH_EXPIRED, ErrorCode.PERMISSION_DENIED, ErrorCode.NOT_FOUND, ErrorCode.INVALID_VALUE]
)
def test_permanent_errors_are_raised_at_once(slept, code):
    fn = Flaky(failure(code))
    with pytest.raises(PlatformCallError):
        with_retries(fn, sleep=slept.append)
    assert (fn.calls, slept) == (1, [])


def test_an_ambiguous_failure_is_never_retried(slept):
    fn = Flaky(failure(ErrorCode.TRANSIENT, ambiguous=True))
    with pytest.raises(PlatformCallError):
        with_retries(fn, sleep=slept.append)
    assert fn.calls == 1


def test_attempts_are_bounded_and_the_last_error_propagates(slept):
    fn = Flaky(*[failure(ErrorCode.TRANSIENT) for _ in range(10)])
    with pytest.raises(PlatformCallError):
        with_retries(fn, policy=RetryPolicy(max_attempts=3), sleep=slept.append)
    assert (fn.calls, len(slept)) == (3, 2)


def test_retry_after_is_a_floor_for_the_wait(slept):
    fn = Flaky(failure(ErrorCode.RATE_LIMITED, retry_after=7.5))
    with_retries(fn, policy=RetryPolicy(base_delay=0.1, max_delay=30), sleep=slept.append, rng=lambda: 0.0)
    assert slept == [7.5]


def test_a_retry_after_longer_than_the_maximum_delay_gives_up_instead_of_blocking(slept):
    fn = Flaky(failure(ErrorCode.RATE_LIMITED, retry_after=300))
    with pytest.raises(PlatformCallError):
        with_retries(fn, policy=RetryPolicy(max_delay=30), sleep=slept.append)
    assert slept == []


def test_on_retry_hears_about_every_wait(slept):
    heard = []
    fn = Flaky(failure(ErrorCode.CONFLICT))
    with_retries(
        fn, sleep=slept.append, on_retry=lambda attempt, exc, delay: heard.append((attempt, exc.error.code, delay))
    )
    assert heard == [(1, ErrorCode.CONFLICT, slept[0])]


def test_the_ceiling_doubles_per_attempt_up_to_the_maximum():
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [policy.delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@given(
    attempt=st.integers(min_value=1, max_value=30),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
    retry_after=st.none() | st.floats(min_value=0, max_value=60),
)
def test_every_delay_is_jittered_below_the_ceiling_and_never_below_retry_after(attempt, draw, retry_after):
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    delay = policy.delay(attempt, retry_after, rng=lambda: draw)
    assert delay >= (retry_after or 0)
    assert delay <= max(min(30, 0.5 * 2 ** (attempt - 1)), retry_after or 0)


def test_gives_up_after_the_last_attempt_or_on_a_too_long_retry_after():
    policy = RetryPolicy(max_attempts=3, max_delay=10)
    assert [policy.gives_up(n) for n in (1, 2, 3)] == [False, False, True]
    assert policy.gives_up(1, retry_after=11) is True


def test_a_nonsense_policy_is_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
