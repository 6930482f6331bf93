"""Metrics read from the database at scrape time: the state every process shares.

Circuit states, queue depth and the oldest task's age, jobs, the reconciler's lag,
deployments and alerts by status, worker heartbeats, and the business gauges (daily
spend, conversions and CPA per connection and platform, allocation drift against the
last plan, operation quotas). Each family costs one query (or one broker call),
whatever the number of connections, so a scrape stays cheap; being read from the
database, they are right whichever process or machine changed the state.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from actions.models import Action, ActionJob, ActionStatus, JobStatus
from observability.models import ACTIVE_ALERT_STATUSES, Alert, WorkerHeartbeat
from platforms.models import CircuitState, EntityPerformanceDaily, PlatformConnection
from scenarios.models import Deployment, DeploymentResult

logger = logging.getLogger(__name__)

CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
# Google Ads basic access: 15,000 operations a day per developer token (PLATFORM_NOTES).
DEFAULT_OPERATION_QUOTAS = {"google_ads": 15000}


class DatabaseCollector(Collector):
    """Every database-derived family; registered on the registry of one scrape."""

    def __init__(self, *, now: datetime | None = None) -> None:
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.now or timezone.now()
        connections = list(PlatformConnection.objects.select_related("tenant").order_by("id"))
        yield circuit_states(connections)
        yield from queue_families(now)
        yield from job_families(now)
        yield reconciler_lag(now)
        yield deployments_by_status()
        yield open_alerts()
        yield heartbeat_age(now)
        yield from business_families(connections, now)
        yield operation_quotas()


def _labels(connection: PlatformConnection) -> list[str]:
    return [str(connection.pk), connection.name, connection.platform, connection.tenant.slug]


CONNECTION_LABELS = ["connection_id", "connection", "platform", "tenant"]


def circuit_states(connections: list[PlatformConnection]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "budgetradar_circuit_state",
        "Circuit breaker per connection: 0 closed, 1 half-open (one probe allowed), 2 open (live work refused).",
        labels=CONNECTION_LABELS,
    )
    for connection in connections:
        family.add_metric(_labels(connection), CIRCUIT_VALUES.get(connection.circuit_state, 0))
    return family


def queue_families(now: datetime) -> Iterator[GaugeMetricFamily]:
    depth = GaugeMetricFamily("budgetradar_task_queue_depth", "Tasks waiting in the django-q2 broker.")
    age = GaugeMetricFamily(
        "budgetradar_task_queue_oldest_age_seconds", "Age of the oldest task waiting in the django-q2 broker."
    )
    try:
        broker = get_broker()
        depth.add_metric([], broker.queue_size())
        age.add_metric([], oldest_task_age(broker, now))
    except Exception:  # a scrape must answer even when the broker does not; readiness says why
        logger.warning("The django-q2 broker could not be read for metrics.", exc_info=True)
    yield depth
    yield age


def oldest_task_age(broker, now: datetime) -> float:
    """Seconds since the oldest waiting task was enqueued (django-q2 stamps ``started``
    at enqueue time); 0 when nothing waits."""
    payload = _oldest_payload(broker, now)
    if payload is None:
        return 0.0
    task = SignedPackage.loads(payload)
    started = task.get("started")
    return max((now - started).total_seconds(), 0.0) if started else 0.0


def _oldest_payload(broker, now: datetime):
    if hasattr(broker, "get_connection") and broker.__class__.__name__ == "ORM":
        row = broker.get_connection().filter(key=broker.list_key, lock__lte=now).order_by("id").first()
        return row.payload if row else None
    if hasattr(broker, "connection") and hasattr(broker.connection, "lindex"):
        return broker.connection.lindex(broker.list_key, 0)  # RPUSH in, BLPOP out: index 0 is oldest
    return None


def job_families(now: datetime) -> Iterator[GaugeMetricFamily]:
    jobs = GaugeMetricFamily("budgetradar_action_jobs", "Execution jobs queued or running.", labels=["status"])
    stats = ActionJob.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).values("status")
    counts = {row["status"]: row["n"] for row in stats.annotate(n=Count("id"))}
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        jobs.add_metric([status], counts.get(status, 0))
    yield jobs
    oldest = ActionJob.objects.filter(status=JobStatus.QUEUED).aggregate(at=Min("created_at"))["at"]
    age = GaugeMetricFamily("budgetradar_action_job_oldest_queued_age_seconds", "Age of the oldest queued job.")
    age.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
    yield age


def reconciler_lag(now: datetime) -> GaugeMetricFamily:
    """How long the oldest unsettled action has waited for the reconciler since its lease expired."""
    oldest = Action.objects.filter(
        status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK], lease_expires_at__lt=now
    ).aggregate(at=Min("lease_expires_at"))["at"]
    family = GaugeMetricFamily(
        "budgetradar_reconciler_lag_seconds",
        "Seconds the oldest executing or rolling-back action has waited since its lease expired (0: none waits).",
    )
    family.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
    return family


def deployments_by_status() -> GaugeMetricFamily:
    family = GaugeMetricFamily("budgetradar_deployments", "Deployments by mode and status.", labels=["mode", "status"])
    for row in Deployment.objects.values("mode", "status").annotate(n=Count("id")).order_by("mode", "status"):
        family.add_metric([row["mode"], row["status"]], row["n"])
    return family


def open_alerts() -> GaugeMetricFamily:
    family = GaugeMetricFamily("budgetradar_alerts_open", "Open or acknowledged alerts.", labels=["severity", "kind"])
    rows = Alert.objects.filter(status__in=ACTIVE_ALERT_STATUSES).values("severity", "kind").annotate(n=Count("id"))
    for row in rows.order_by("severity", "kind"):
        family.add_metric([row["severity"], row["kind"]], row["n"])
    return family


def heartbeat_age(now: datetime) -> GaugeMetricFamily:
    newest = WorkerHeartbeat.objects.aggregate(at=Max("seen_at"))["at"]
    family = GaugeMetricFamily(
        "budgetradar_worker_heartbeat_age_seconds", "Seconds since a django-q2 worker last ran the heartbeat schedule."
    )
    if newest is not None:
        family.add_metric([], max((now - newest).total_seconds(), 0.0))
    return family


# Business gauges -----------------------------------------------------------------------------


def local_yesterday(time_zone: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(time_zone)).date() - timedelta(days=1)


def business_families(connections: list[PlatformConnection], now: datetime) -> Iterator[GaugeMetricFamily]:
    """Yesterday (in each account's time zone) per connection: spend, conversions, CPA; drift."""
    spend = GaugeMetricFamily(
        "budgetradar_daily_spend", "Spend of yesterday (account time zone), account currency.", labels=CONNECTION_LABELS
    )
    conversions = GaugeMetricFamily(
        "budgetradar_daily_conversions", "Conversions of yesterday (account time zone).", labels=CONNECTION_LABELS
    )
    cpa = GaugeMetricFamily(
        "budgetradar_daily_cpa",
        "Cost per conversion of yesterday; absent without conversions.",
        labels=CONNECTION_LABELS,
    )
    totals = yesterday_totals(connections, now)
    for connection in connections:
        if connection.pk not in totals:
            continue
        day_spend, day_conversions = totals[connection.pk]
        spend.add_metric(_labels(connection), float(day_spend))
        conversions.add_metric(_labels(connection), float(day_conversions))
        if day_conversions:
            cpa.add_metric(_labels(connection), float(day_spend / day_conversions))
    yield spend
    yield conversions
    yield cpa
    yield allocation_drift(connections)


def yesterday_totals(connections: list[PlatformConnection], now: datetime) -> dict[int, tuple[Decimal, Decimal]]:
    """Campaign-level spend and conversions of each connection's local yesterday (one query)."""
    by_day: dict[date, list[int]] = defaultdict(list)
    for connection in connections:
        by_day[local_yesterday(connection.time_zone, now)].append(connection.pk)
    if not by_day:
        return {}
    match = Q()
    for day, ids in by_day.items():
        match |= Q(date=day, entity__connection_id__in=ids)
    rows = (
        EntityPerformanceDaily.objects.filter(match, entity__entity_type="campaign")
        .values("entity__connection_id")
        .annotate(spend=Sum("spend"), conversions=Sum("conversions"))
    )
    return {r["entity__connection_id"]: (r["spend"] or Decimal(0), r["conversions"] or Decimal(0)) for r in rows}


def allocation_drift(connections: list[PlatformConnection]) -> GaugeMetricFamily:
    """Σ|budget now − budget planned| / Σ planned over the entities of each connection's
    latest succeeded live deployment (the last plan put in place)."""
    family = GaugeMetricFamily(
        "budgetradar_allocation_drift_ratio",
        "How far daily budgets moved since the last deployed plan: sum of absolute differences over the sum planned.",
        labels=CONNECTION_LABELS,
    )
    latest = (
        DeploymentResult.objects.filter(deployment__mode=Deployment.Mode.LIVE, status=DeploymentResult.Status.SUCCEEDED)
        .values("entity__connection_id")
        .annotate(deployment_id=Max("deployment_id"))
    )
    pairs = {row["entity__connection_id"]: row["deployment_id"] for row in latest}
    if not pairs:
        return family
    match = Q()
    for connection_id, deployment_id in pairs.items():
        match |= Q(deployment_id=deployment_id, entity__connection_id=connection_id)
    planned: dict[int, Decimal] = defaultdict(Decimal)
    moved: dict[int, Decimal] = defaultdict(Decimal)
    results = DeploymentResult.objects.filter(match, status=DeploymentResult.Status.SUCCEEDED)
    for row in results.values("entity__connection_id", "after", "entity__daily_budget"):
        target = (row["after"] or {}).get("daily_budget")
        if target in (None, "") or row["entity__daily_budget"] is None:
            continue
        planned[row["entity__connection_id"]] += Decimal(str(target))
        moved[row["entity__connection_id"]] += abs(row["entity__daily_budget"] - Decimal(str(target)))
    for connection in connections:
        if planned.get(connection.pk):
            family.add_metric(_labels(connection), float(moved[connection.pk] / planned[connection.pk]))
    return family


def operation_quotas() -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "budgetradar_platform_operation_quota",
        "Operations a platform allows per day (PLATFORM_DAILY_OPERATION_QUOTAS); compare with "
        "increase(budgetradar_platform_operations_total[24h]).",
        labels=["platform"],
    )
    quotas = {**DEFAULT_OPERATION_QUOTAS, **getattr(settings, "PLATFORM_DAILY_OPERATION_QUOTAS", {})}
    for platform, quota in sorted(quotas.items()):
        family.add_metric([platform], quota)
    return family
