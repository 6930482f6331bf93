"""Metrics around platform executors, installed by ``platforms.registry.get_executor``.

``instrument_executor`` wraps an executor's public calls on the instance (its class and
attributes stay as they are) and its throttle:
- the throttle is called before every request with the operations it carries, so it
  marks where each request starts and ends: a request lasts from the moment the rate
  limiter lets it go until the adapter asks for the next one or the call returns (the
  adapter's own work on the response is included, the throttle's wait is not);
- time spent inside the throttle is a rate-limit wait;
- when the call returns, its requests are counted with the call's outcome: ``ok``,
  ``partial`` (some changes failed), or the error code of the taxonomy.
Nested calls (an adapter calling its own ``read_state`` inside ``apply``) are counted
once, by the outermost call. Metrics never change what the executor does or returns.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from observability.metrics import platform_operations_record, platform_requests_record, rate_limit_wait_record
from platforms.base import PlatformExecutor, Throttle
from platforms.types import OutcomeStatus, PlatformCallError

# (method, operation label); apply is "apply" or "validate" depending on its argument.
METHODS = {
    "read_state": "read",
    "apply": "apply",
    "list_entities": "list",
    "read_performance": "performance",
    "test_connection": "test",
}
MIN_WAIT_SECONDS = 0.001  # below this the bucket simply had tokens


class _Meter:
    """Request boundaries and outcomes of the executor call in progress."""

    def __init__(self, platform: str, clock: Callable[[], float]) -> None:
        self.platform = platform
        self.clock = clock
        self.depth = 0
        self.operation = ""
        self.request_started: float | None = None
        self.durations: list[float] = []

    def before_request(self) -> None:
        self._close_request()

    def request_sent(self) -> None:
        self.request_started = self.clock()

    def _close_request(self) -> None:
        if self.request_started is not None:
            self.durations.append(self.clock() - self.request_started)
            self.request_started = None

    def finish(self, outcome: str) -> None:
        self._close_request()
        durations, self.durations = self.durations, []
        platform_requests_record(platform=self.platform, operation=self.operation, outcome=outcome, durations=durations)


def instrument_executor(
    executor: PlatformExecutor, *, clock: Callable[[], float] = time.perf_counter
) -> PlatformExecutor:
    """Record request counts, latencies, operations and throttle waits of ``executor``."""
    meter = _Meter(executor.platform, clock)
    executor.throttle = MeteredThrottle(executor.throttle, meter)
    for name, operation in METHODS.items():
        method = getattr(executor, name, None)
        if method is not None:
            setattr(executor, name, _metered_call(method, operation, meter))
    return executor


class MeteredThrottle:
    """The executor's throttle with its waits and request boundaries recorded;
    ``inner`` is the limiter it delegates to."""

    def __init__(self, inner: Throttle, meter: _Meter) -> None:
        self.inner = inner
        self.meter = meter

    def __call__(self, operations: int) -> None:
        meter = self.meter
        meter.before_request()
        started = meter.clock()
        self.inner(operations)
        waited = meter.clock() - started
        if waited >= MIN_WAIT_SECONDS:
            rate_limit_wait_record(platform=meter.platform, seconds=waited, source="throttle")
        platform_operations_record(platform=meter.platform, operations=operations)
        meter.request_sent()


def _metered_call(method: Callable[..., Any], operation: str, meter: _Meter) -> Callable[..., Any]:
    @functools.wraps(method)
    def metered(*args: Any, **kwargs: Any) -> Any:
        if meter.depth:
            return method(*args, **kwargs)
        meter.depth += 1
        meter.operation = "validate" if operation == "apply" and kwargs.get("validate_only") else operation
        outcome = "ok"
        try:
            result = method(*args, **kwargs)
            if operation == "apply":
                outcome = apply_outcome(result)
            return result
        except PlatformCallError as exc:
            outcome = str(exc.error.code)
            raise
        except Exception:
            outcome = "exception"
            raise
        finally:
            meter.depth -= 1
            meter.finish(outcome)

    return metered


def apply_outcome(outcomes: list) -> str:
    """``ok`` when every change applied (or validated), else the first error's code, or
    ``partial`` when some applied; ``unknown`` when any outcome stayed ambiguous."""
    failed = [o for o in outcomes if o.status not in (OutcomeStatus.APPLIED, OutcomeStatus.VALIDATED)]
    if not failed:
        return "ok"
    if any(o.status == OutcomeStatus.UNKNOWN for o in failed):
        return "unknown"
    if len(failed) < len(outcomes):
        return "partial"
    error = failed[0].error
    return str(error.code) if error is not None else "failed"
