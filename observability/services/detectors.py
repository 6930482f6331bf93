"""Detectors: they read the database, report conditions, and the alerts follow.

Each detector returns the conditions it finds now; ``detectors_run`` hands them to
``alerts_sync``, which raises new ones and resolves, as cleared, the open alerts of the
same kind that are no longer found. No detector calls a platform.

Performance (warnings, per connection, yesterday in the account's time zone against
the same weekday of the ``baseline_weeks`` weeks before, campaign level): CPA up more
than ``anomaly_cpa_spike_pct`` %, conversions down more than
``anomaly_conversions_drop_pct`` %, at least ``anomaly_guardrail_breaches`` breaches
in the last 24 hours of preflights.

System (critical unless said): ingestion failure (an active connection without
yesterday's rows once the local clock passed ``WATCH_EVALUATION_HOUR``, or never
synced), stuck actions (queued or executing longer than ``stuck_action_minutes``),
parked actions (waiting for a next attempt longer than ``parked_action_hours``,
warning), reconciler lag (an unsettled action's lease expired longer than
``RECONCILER_LAG_MAX_SECONDS`` ago), open circuits, expiring tokens (a credentials
``expires_at`` within ``token_expiry_warning_days``, warning), schedules that did not
run, and no worker heartbeat. Optimizer failures, quota errors and expired tokens
arrive as outbox events (``observability.consumers``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from actions.models import Action, ActionStatus
from budgetradar.timefmt import format_time
from observability.models import AlertKind, ObservabilitySettings, Severity, WorkerHeartbeat
from observability.services.alerts import Condition, alerts_sync, dedup_key
from observability.services.health import overdue_schedules
from observability.services.settings import settings_for_tenants
from platforms.models import CircuitState, EntityPerformanceDaily, PlatformConnection
from scenarios.models import PreflightEntity, PreflightRun

Detector = Callable[[datetime], list[Condition]]
PCT = Decimal("0.01")


def _connections() -> list[PlatformConnection]:
    return list(PlatformConnection.objects.filter(is_active=True).select_related("tenant").order_by("id"))


def _settings(connections: Iterable[PlatformConnection]) -> dict[int, ObservabilitySettings]:
    return settings_for_tenants({c.tenant_id for c in connections})


def _condition(
    kind: str, severity: str, connection: PlatformConnection, title: str, message: str, **details
) -> Condition:
    return Condition(
        kind=kind,
        severity=severity,
        dedup_key=dedup_key(kind, connection.tenant_id, "connection", connection.pk),
        title=title,
        message=message,
        tenant_id=connection.tenant_id,
        connection_id=connection.pk,
        details=details,
    )


# Performance ---------------------------------------------------------------------------------


def local_yesterday(connection: PlatformConnection, now: datetime) -> date:
    return now.astimezone(ZoneInfo(connection.time_zone)).date() - timedelta(days=1)


def performance_by_day(connections: list[PlatformConnection], now: datetime, weeks: int) -> dict:
    """(connection id, date) -> (spend, conversions), campaign level, one query."""
    if not connections:
        return {}
    days = [local_yesterday(c, now) for c in connections]
    rows = (
        EntityPerformanceDaily.objects.filter(
            entity__connection__in=connections,
            entity__entity_type="campaign",
            date__gte=min(days) - timedelta(weeks=weeks),
            date__lte=max(days),
        )
        .values("entity__connection_id", "date")
        .annotate(spend=Sum("spend"), conversions=Sum("conversions"))
    )
    return {(r["entity__connection_id"], r["date"]): (r["spend"] or 0, r["conversions"] or 0) for r in rows}


def _day_versus_baseline(connection, config, data, now) -> tuple[Decimal, Decimal, Decimal | None, Decimal] | None:
    """(conversions, baseline conversions, cpa, baseline cpa) of yesterday, or None when not judgeable."""
    day = local_yesterday(connection, now)
    if (connection.pk, day) not in data:
        return None
    spend, conversions = (Decimal(v) for v in data[connection.pk, day])
    earlier = [day - timedelta(weeks=n) for n in range(1, config.baseline_weeks + 1)]
    base = [tuple(Decimal(v) for v in data[connection.pk, d]) for d in earlier if (connection.pk, d) in data]
    if not base:
        return None
    base_conversions = sum(c for _, c in base) / len(base)
    if not base_conversions or base_conversions < config.min_baseline_conversions:
        return None
    base_cpa = sum(s for s, _ in base) / len(base) / base_conversions
    return conversions, base_conversions, (spend / conversions if conversions else None), base_cpa


def _pct(value: Decimal, base: Decimal) -> Decimal:
    return ((value - base) / base * 100).quantize(PCT, ROUND_HALF_EVEN)


def detect_performance(now: datetime) -> dict[str, list[Condition]]:
    connections = _connections()
    configs = _settings(connections)
    weeks = max((c.baseline_weeks for c in configs.values()), default=4)
    data = performance_by_day(connections, now, weeks)
    found: dict[str, list[Condition]] = {AlertKind.CPA_SPIKE: [], AlertKind.CONVERSIONS_DROP: []}
    for connection in connections:
        config = configs[connection.tenant_id]
        judged = _day_versus_baseline(connection, config, data, now)
        if judged is None:
            continue
        conversions, base_conversions, cpa, base_cpa = judged
        day = local_yesterday(connection, now)
        drop = _pct(conversions, base_conversions)
        if drop < -Decimal(config.anomaly_conversions_drop_pct):
            found[AlertKind.CONVERSIONS_DROP].append(
                _condition(
                    AlertKind.CONVERSIONS_DROP,
                    Severity.WARNING,
                    connection,
                    f"Conversions down {-drop} % on {connection.name}",
                    f"{connection.name} had {conversions:.0f} conversions on {day} against {base_conversions:.1f} on "
                    f"the same weekday of the {config.baseline_weeks} weeks before ({drop} %, the bound is "
                    f"-{config.anomaly_conversions_drop_pct} %). Check tracking, delivery and recent changes.",
                    day=str(day),
                    change_pct=str(drop),
                )
            )
        rise = _pct(cpa, base_cpa) if cpa is not None else None
        if rise is not None and rise > Decimal(config.anomaly_cpa_spike_pct):
            found[AlertKind.CPA_SPIKE].append(
                _condition(
                    AlertKind.CPA_SPIKE,
                    Severity.WARNING,
                    connection,
                    f"CPA up {rise} % on {connection.name}",
                    f"{connection.name}'s CPA was {cpa:.2f} {connection.currency} on {day} against {base_cpa:.2f} "
                    "on the "
                    f"same weekday of the {config.baseline_weeks} weeks before (+{rise} %, the bound is "
                    f"+{config.anomaly_cpa_spike_pct} %). Look at bids, budgets and recent changes.",
                    day=str(day),
                    change_pct=str(rise),
                )
            )
    return found


def detect_guardrail_breaches(now: datetime) -> list[Condition]:
    """Breaches per connection in the preflights of the last 24 hours."""
    # Each stored entity row counts its own and its fields' breaches: one aggregate query.
    rows = (
        PreflightEntity.objects.filter(
            run__status=PreflightRun.Status.SUCCEEDED, run__created_at__gte=now - timedelta(hours=24)
        )
        .values("connection_id")
        .annotate(found=Sum("breaches"))
        .order_by()
    )
    counts: dict[int, int] = defaultdict(int, {row["connection_id"]: row["found"] or 0 for row in rows})
    connections = [c for c in _connections() if counts.get(c.pk)]
    configs = _settings(connections)
    conditions = []
    for connection in connections:
        bound = configs[connection.tenant_id].anomaly_guardrail_breaches
        if counts[connection.pk] >= bound:
            conditions.append(
                _condition(
                    AlertKind.GUARDRAIL_BREACHES,
                    Severity.WARNING,
                    connection,
                    f"{counts[connection.pk]} guardrail breaches on {connection.name} in 24 hours",
                    f"Preflights of the last 24 hours found {counts[connection.pk]} guardrail breaches on "
                    f"{connection.name} (the bound is {bound}). Plans keep asking for changes the policy refuses: "
                    "review the optimizer's proposals or the guardrail policy.",
                    breaches=counts[connection.pk],
                )
            )
    return conditions


# System -----------------------------------------------------------------------------------------


def last_complete_day(connection: PlatformConnection, now: datetime) -> date:
    """Yesterday once the account's clock passed the evaluation hour (ingestion had its
    chance), else the day before: a day never counts as missing before it could exist."""
    local = now.astimezone(ZoneInfo(connection.time_zone))
    return local.date() - timedelta(days=1 if local.hour >= settings.WATCH_EVALUATION_HOUR else 2)


def detect_ingestion(now: datetime) -> list[Condition]:
    connections = _connections()
    expected = {c.pk: last_complete_day(c, now) for c in connections}
    have = set(
        EntityPerformanceDaily.objects.filter(entity__connection__in=connections, date__in=set(expected.values()))
        .values_list("entity__connection_id", "date")
        .distinct()
    )
    conditions = []
    for connection in connections:
        day = expected[connection.pk]
        if (connection.pk, day) in have:
            continue
        synced = (
            f"last synced {format_time(connection.last_synced_at, connection.time_zone)}"
            if connection.last_synced_at
            else "never synced"
        )
        conditions.append(
            _condition(
                AlertKind.INGESTION_FAILURE,
                Severity.CRITICAL,
                connection,
                f"No performance data for {day} on {connection.name}",
                f"{connection.name} has no daily performance for {day} ({synced}). Forecasts, the watch and "
                "the planner work on stale data: test the connection and run a sync.",
                day=str(day),
            )
        )
    return conditions


def detect_stuck_actions(now: datetime) -> list[Condition]:
    connections = {c.pk: c for c in _connections()}
    configs = _settings(connections.values())
    shortest = min((c.stuck_action_minutes for c in configs.values()), default=30)
    cutoff = now - timedelta(minutes=shortest)
    rows = Action.objects.filter(
        Q(status=ActionStatus.QUEUED, queued_at__lt=cutoff) | Q(status=ActionStatus.EXECUTING, started_at__lt=cutoff),
        connection_id__in=list(connections),
    ).values_list("connection_id", "status", "queued_at", "started_at")
    stuck: dict[int, int] = defaultdict(int)
    for connection_id, status, queued_at, started_at in rows:
        bound = timedelta(minutes=configs[connections[connection_id].tenant_id].stuck_action_minutes)
        since = queued_at if status == ActionStatus.QUEUED else started_at
        if since is not None and now - since > bound:
            stuck[connection_id] += 1
    conditions = []
    for connection_id, count in sorted(stuck.items()):
        connection = connections[connection_id]
        bound = configs[connection.tenant_id].stuck_action_minutes
        conditions.append(
            _condition(
                AlertKind.STUCK_ACTIONS,
                Severity.CRITICAL,
                connection,
                f"{count} actions stuck on {connection.name}",
                f"{count} actions on {connection.name} have been queued or executing for more than {bound} minutes. "
                "Check that workers run (/health/ready) and the connection's circuit; the reconciler settles "
                "actions whose worker died.",
                count=count,
            )
        )
    return conditions


def detect_parked_actions(now: datetime) -> list[Condition]:
    """Approved actions waiting for a next attempt (rate-limit blocks, change windows) too long."""
    connections = {c.pk: c for c in _connections()}
    configs = _settings(connections.values())
    rows = (
        Action.objects.filter(status=ActionStatus.APPROVED, connection_id__in=list(connections))
        .exclude(wait_reason="")
        .exclude(next_attempt_at=None)
        .values("connection_id")
        .annotate(latest=Max("next_attempt_at"), waiting_since=Min("approved_at"), n=Count("id"))
    )
    conditions = []
    for row in rows:
        connection = connections[row["connection_id"]]
        bound = timedelta(hours=configs[connection.tenant_id].parked_action_hours)
        overdue = row["latest"] - now > bound or (row["waiting_since"] and now - row["waiting_since"] > bound)
        if overdue:
            conditions.append(
                _condition(
                    AlertKind.PARKED_ACTIONS,
                    Severity.WARNING,
                    connection,
                    f"{row['n']} actions parked on {connection.name}",
                    f"{row['n']} approved actions on {connection.name} wait for a next attempt (the latest at "
                    f"{format_time(row['latest'], connection.time_zone)}), "
                    f"longer than {bound.total_seconds() / 3600:.0f} hours. "
                    "Read their wait reason on the action page: a rate-limit block or a change window.",
                    count=row["n"],
                )
            )
    return conditions


def detect_reconciler_lag(now: datetime) -> list[Condition]:
    oldest = Action.objects.filter(
        status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK], lease_expires_at__lt=now
    ).aggregate(at=Min("lease_expires_at"), n=Count("id"))
    if oldest["at"] is None or (now - oldest["at"]).total_seconds() <= settings.RECONCILER_LAG_MAX_SECONDS:
        return []
    minutes = (now - oldest["at"]).total_seconds() / 60
    return [
        Condition(
            kind=AlertKind.RECONCILER_LAG,
            severity=Severity.CRITICAL,
            dedup_key=dedup_key(AlertKind.RECONCILER_LAG, None),
            title=f"Reconciler {minutes:.0f} minutes behind",
            message=f"{oldest['n']} executing or rolling-back actions lost their worker; the oldest lease expired "
            f"{minutes:.0f} minutes ago (bound {settings.RECONCILER_LAG_MAX_SECONDS // 60} min). The reconciler "
            "schedule is not keeping up or not running: check /health/ready and the qcluster logs.",
            tenant_id=None,
            details={"actions": oldest["n"], "lag_seconds": int(minutes * 60)},
        )
    ]


def detect_open_circuits(now: datetime) -> list[Condition]:
    conditions = []
    for connection in _connections():
        if connection.circuit_state == CircuitState.CLOSED:
            continue
        opened = (
            f"since {format_time(connection.circuit_opened_at, connection.time_zone)}"
            if connection.circuit_opened_at
            else ""
        )
        conditions.append(
            _condition(
                AlertKind.CIRCUIT_OPEN,
                Severity.CRITICAL,
                connection,
                f"Circuit breaker {connection.get_circuit_state_display().split(' (')[0].lower()} on {connection.name}",
                f"Live work on {connection.name} is refused {opened}: "
                f"{connection.circuit_reason or 'repeated failures'}. "
                "Fix the cause (credentials, permissions, platform outage), then reset the circuit on the connection.",
                state=connection.circuit_state,
            )
        )
    return conditions


def detect_expiring_tokens(now: datetime) -> list[Condition]:
    """Connections whose credentials carry ``expires_at`` (ISO 8601) within the warning days."""
    connections = _connections()
    configs = _settings(connections)
    conditions = []
    for connection in connections:
        raw = connection.credentials.get("expires_at") if connection.credentials else None
        expires = parse_datetime(str(raw)) if raw else None
        if expires is None:
            continue
        if timezone.is_naive(expires):
            expires = timezone.make_aware(expires, ZoneInfo("UTC"))
        days = configs[connection.tenant_id].token_expiry_warning_days
        if expires - now <= timedelta(days=days):
            past = expires <= now
            conditions.append(
                _condition(
                    AlertKind.TOKEN_EXPIRING,
                    Severity.CRITICAL if past else Severity.WARNING,
                    connection,
                    f"Access token of {connection.name} {'expired' if past else 'expires'} {expires:%Y-%m-%d}",
                    f"The access token of {connection.name} {'expired' if past else 'expires'} at "
                    f"{format_time(expires, connection.time_zone)}. "
                    "Reconnect the account (new credentials) before work on it fails.",
                    expires_at=expires.isoformat(),
                )
            )
    return conditions


def detect_missed_schedules(now: datetime) -> list[Condition]:
    return [
        Condition(
            kind=AlertKind.SCHEDULE_MISSED,
            severity=Severity.CRITICAL,
            dedup_key=dedup_key(AlertKind.SCHEDULE_MISSED, None, schedule.pk),
            title=f"Schedule “{schedule.name or schedule.func}” did not run",
            message=f"The schedule “{schedule.name or schedule.func}” was due at "
            f"{format_time(schedule.next_run)} "
            f"and is {seconds / 60:.0f} minutes late. A qcluster with a scheduler must be running.",
            tenant_id=None,
            details={"schedule": schedule.name or schedule.func, "late_seconds": int(seconds)},
        )
        for schedule, seconds in overdue_schedules(now)
    ]


def detect_worker_heartbeat(now: datetime) -> list[Condition]:
    newest = WorkerHeartbeat.objects.aggregate(at=Max("seen_at"))["at"]
    limit = settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS
    if newest is not None and (now - newest).total_seconds() <= limit:
        return []
    seen = f"was seen at {format_time(newest)}" if newest else "has never been seen"
    return [
        Condition(
            kind=AlertKind.WORKER_DOWN,
            severity=Severity.CRITICAL,
            dedup_key=dedup_key(AlertKind.WORKER_DOWN, None),
            title="No django-q2 worker heartbeat",
            message=f"No worker has run the heartbeat schedule for more than {limit} s: the last one {seen}. Nothing "
            "executes, reconciles or alerts until a qcluster runs again.",
            tenant_id=None,
        )
    ]


SYSTEM_DETECTORS: dict[str, Detector] = {
    AlertKind.INGESTION_FAILURE: detect_ingestion,
    AlertKind.STUCK_ACTIONS: detect_stuck_actions,
    AlertKind.PARKED_ACTIONS: detect_parked_actions,
    AlertKind.RECONCILER_LAG: detect_reconciler_lag,
    AlertKind.CIRCUIT_OPEN: detect_open_circuits,
    AlertKind.TOKEN_EXPIRING: detect_expiring_tokens,
    AlertKind.SCHEDULE_MISSED: detect_missed_schedules,
    AlertKind.WORKER_DOWN: detect_worker_heartbeat,
}


def system_detectors_run(*, now: datetime | None = None) -> dict[str, tuple[int, int]]:
    """Run every system detector and sync its alerts: kind -> (new alerts, resolved alerts)."""
    now = now or timezone.now()
    return {kind: alerts_sync(kind, detector(now), now=now) for kind, detector in SYSTEM_DETECTORS.items()}


def performance_detectors_run(*, now: datetime | None = None) -> dict[str, tuple[int, int]]:
    """Run the daily performance detectors and sync their alerts."""
    now = now or timezone.now()
    report = {kind: alerts_sync(kind, found, now=now) for kind, found in detect_performance(now).items()}
    breaches = detect_guardrail_breaches(now)
    report[AlertKind.GUARDRAIL_BREACHES] = alerts_sync(AlertKind.GUARDRAIL_BREACHES, breaches, now=now)
    return report


def describe_report(report: dict[str, tuple[int, int]]) -> str:
    changed = [f"{kind}: +{new} -{cleared}" for kind, (new, cleared) in report.items() if new or cleared]
    return ", ".join(changed) or "no change"
