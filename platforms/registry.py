"""Which executor talks to a connection's platform.

Adapters are imported lazily: the Google Ads SDK alone imports about a thousand modules,
and a process that only touches the sandbox should not pay for it.
"""

from __future__ import annotations

from budgetradar.transactions import refuse_inside_transaction
from observability.instrument import instrument_executor
from platforms.base import BeforeWrite, PlatformExecutor, Throttle, no_before_write
from platforms.models import Platform, PlatformConnection
from platforms.ratelimit import ConnectionThrottle


def executor_class(platform: str) -> type[PlatformExecutor]:
    """The executor class of ``platform``; ``ValueError`` for a platform without one."""
    if platform == Platform.SANDBOX:
        from platforms.sandbox.executor import SandboxExecutor

        return SandboxExecutor
    if platform == Platform.GOOGLE_ADS:
        from platforms.google_ads import GoogleAdsExecutor

        return GoogleAdsExecutor
    if platform == Platform.META:
        from platforms.meta import MetaExecutor

        return MetaExecutor
    raise ValueError(f"No executor for platform {platform!r}; expected one of {', '.join(Platform.values)}.")


class OutsideTransactions:
    """The throttle of a registry-made executor: before every request it checks that no
    database transaction is open (no platform call inside a transaction), then waits
    for the connection's rate limiter (``inner``)."""

    def __init__(self, inner: Throttle) -> None:
        self.inner = inner

    def __call__(self, operations: int) -> None:
        refuse_inside_transaction("A platform request")
        self.inner(operations)


def get_executor(
    connection: PlatformConnection, *, throttle: Throttle | None = None, before_write: BeforeWrite = no_before_write
) -> PlatformExecutor:
    """An executor for ``connection``, throttled by the connection's shared rate limiter
    unless ``throttle`` is given (benchmarks and tests pass ``platforms.base.no_throttle``);
    ``before_write`` fences each write request (the engine's lease check).

    Every executor is instrumented (request counts and latencies, operations, throttle
    waits: ``observability.instrument``); the metrics never change what it does."""
    cls = executor_class(connection.platform)
    throttle = throttle if throttle is not None else ConnectionThrottle(connection)
    executor = cls(connection.to_config(), throttle=OutsideTransactions(throttle))
    executor.before_write = before_write
    return instrument_executor(executor)
