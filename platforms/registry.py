"""Which executor talks to a connection's platform.

Adapters are imported lazily: the Google Ads SDK alone imports about a thousand modules,
and a process that only touches the sandbox should not pay for it.
"""

from __future__ import annotations

from observability.instrument import instrument_executor
from platforms.base import PlatformExecutor, Throttle
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


def get_executor(connection: PlatformConnection, *, throttle: Throttle | None = None) -> PlatformExecutor:
    """An executor for ``connection``, throttled by the connection's shared rate limiter
    unless ``throttle`` is given (benchmarks and tests pass ``platforms.base.no_throttle``).

    Every executor is instrumented (request counts and latencies, operations, throttle
    waits: ``observability.instrument``); the metrics never change what it does."""
    cls = executor_class(connection.platform)
    throttle = throttle if throttle is not None else ConnectionThrottle(connection)
    return instrument_executor(cls(connection.to_config(), throttle=throttle))
