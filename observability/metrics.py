"""Prometheus counters and histograms, and the small functions that record them.

Everything here counts events in the process that saw them: a gunicorn worker, a
qcluster worker, a management command. prometheus-client's multiprocess mode makes
that correct with several processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before
the process starts), every process writes its samples to files there and ``/metrics``
adds up the files of every process on the host, the dead ones included (counters never
go backwards). State that lives in the database (circuits, queues, alerts, business
figures) is not counted here but read at scrape time (``observability.collectors``), so
it is right whichever process or machine changed it.

This module imports no Django models, so platform adapters and the engine can call
its functions without import cycles; each function is cheap (a dictionary lookup and
an add) and never raises for an unexpected label value.

Call sites other engineers own are listed in the README ("Metrics").
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

# Latency of platform requests: a budget read is ~50 ms, a 10,000-operation Google
# mutate or a 50-request Meta batch can take tens of seconds.
PLATFORM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

PREFLIGHT_RUNS = Counter(
    # The seed names this counter exactly; every other family carries the budgetradar_ prefix.
    "preflight_runs",
    "Preflight runs by generation mode and final status.",
    ["mode", "status"],
)
ACTION_TRANSITIONS = Counter(
    "budgetradar_action_transitions",
    "Actions that entered a status, by status and platform.",
    ["status", "platform"],
)
PLATFORM_REQUESTS = Counter(
    "budgetradar_platform_requests",
    "Requests sent to ad platforms, by platform, operation and the outcome of the call they belonged to.",
    ["platform", "operation", "outcome"],
)
PLATFORM_REQUEST_SECONDS = Histogram(
    "budgetradar_platform_request_duration_seconds",
    "Time from a request leaving the rate limiter to the adapter's next request or return (throttle waits "
    "excluded), by platform and operation.",
    ["platform", "operation"],
    buckets=PLATFORM_BUCKETS,
)
PLATFORM_OPERATIONS = Counter(
    "budgetradar_platform_operations",
    "Operations carried by platform requests (a Google mutate or Meta batch carries many), by platform; "
    "compare increase(...[24h]) with budgetradar_platform_operation_quota.",
    ["platform"],
)
RATE_LIMIT_WAITS = Histogram(
    "budgetradar_rate_limit_wait_seconds",
    "Waits imposed by rate limits, by platform and source (throttle: the shared token bucket; "
    "retry_after: the platform asked to back off).",
    ["platform", "source"],
    buckets=WAIT_BUCKETS,
)
PLANNER_RUNS = Counter(
    "budgetradar_planner_runs",
    "Planner runs by the fallback level that produced the plan and their status.",
    ["fallback_level", "status"],
)
DEPLOYMENTS_FINISHED = Counter(
    "budgetradar_deployments_finished",
    "Deployments that reached a final status, by status.",
    ["status"],
)
ALERTS_RAISED = Counter(
    "budgetradar_alerts_raised",
    "Alerts raised (a new open alert, not a repeat of an open one), by severity and kind.",
    ["severity", "kind"],
)
ALERT_DELIVERY_ATTEMPTS = Counter(
    "budgetradar_alert_delivery_attempts",
    "Attempts to deliver an alert to a channel, by channel kind and outcome (sent, retry, gave_up).",
    ["channel", "outcome"],
)


def multiprocess_dir() -> str:
    """Where this host's processes write their samples ('' when multiprocess mode is off)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# Recording functions: the instrumentation other modules call. -------------------------


def preflight_run_record(*, mode: str, status: str) -> None:
    """One preflight finished (``status`` succeeded or failed)."""
    PREFLIGHT_RUNS.labels(mode=mode or "manual", status=status).inc()


def action_transitions_record(*, status: str, platforms: Iterable[str]) -> None:
    """Actions entered ``status``: one platform name per action (a batch passes many)."""
    counts: dict[str, int] = {}
    for platform in platforms:
        counts[platform] = counts.get(platform, 0) + 1
    for platform, count in counts.items():
        ACTION_TRANSITIONS.labels(status=status, platform=platform).inc(count)


def platform_requests_record(*, platform: str, operation: str, outcome: str, durations: list[float]) -> None:
    """Requests of one executor call: one duration per request, all with the call's outcome."""
    if not durations:
        return
    PLATFORM_REQUESTS.labels(platform=platform, operation=operation, outcome=outcome).inc(len(durations))
    histogram = PLATFORM_REQUEST_SECONDS.labels(platform=platform, operation=operation)
    for seconds in durations:
        histogram.observe(max(seconds, 0.0))


def platform_operations_record(*, platform: str, operations: int) -> None:
    PLATFORM_OPERATIONS.labels(platform=platform).inc(max(operations, 1))


def rate_limit_wait_record(*, platform: str, seconds: float, source: str = "throttle") -> None:
    """A worker waited ``seconds`` because of a rate limit (``source``: throttle or retry_after)."""
    if seconds > 0:
        RATE_LIMIT_WAITS.labels(platform=platform, source=source).observe(seconds)


def planner_run_record(*, fallback_level: str, status: str) -> None:
    """One planner run finished; ``fallback_level`` names what produced the plan
    (curves, previous_allocation, rolling_average, cpa_based, equal_split)."""
    PLANNER_RUNS.labels(fallback_level=fallback_level or "none", status=status).inc()


def deployment_finished_record(*, status: str) -> None:
    DEPLOYMENTS_FINISHED.labels(status=status).inc()


def alert_raised_record(*, severity: str, kind: str) -> None:
    ALERTS_RAISED.labels(severity=severity, kind=kind).inc()


def alert_delivery_record(*, channel: str, outcome: str) -> None:
    ALERT_DELIVERY_ATTEMPTS.labels(channel=channel, outcome=outcome).inc()
