"""Reads for pages that show the watch and the alerts (the admin, the dashboard).

``watch_status_for_deployment`` feeds ``observability/_watch_status.html``, which the
deployment page includes; ``alerts_needing_a_person`` feeds
``observability/_open_alerts.html``, the dashboard's "needs a person" panel. Both take a
bounded number of queries whatever the number of watches, days or alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Case, IntegerField, QuerySet, Value, When

from budgetradar.tenancy import scope_to_user
from observability.models import ACTIVE_ALERT_STATUSES, Alert, AlertStatus, Severity, Watch, WatchDay


@dataclass(frozen=True)
class WatchStatus:
    watch: Watch
    days: list[WatchDay]
    entity_count: int


def watch_status_for_deployment(deployment) -> list[WatchStatus]:
    """The deployment's watches (one per connection) with their days in date order; two queries."""
    watches = list(
        Watch.objects.filter(deployment=deployment)
        .select_related("connection", "restoring_scenario", "restoring_deployment")
        .prefetch_related("days", "entities")
        .order_by("connection__name")
    )
    return [
        WatchStatus(watch=w, days=sorted(w.days.all(), key=lambda d: d.date), entity_count=len(w.entities.all()))
        for w in watches
    ]


def alerts_ordered(queryset: QuerySet[Alert]) -> QuerySet[Alert]:
    """Open first, then acknowledged, then resolved; critical before warning before info; newest first."""
    return queryset.annotate(
        status_rank=Case(
            When(status=AlertStatus.OPEN, then=Value(0)),
            When(status=AlertStatus.ACKNOWLEDGED, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        ),
        severity_rank=Case(
            When(severity=Severity.CRITICAL, then=Value(0)),
            When(severity=Severity.WARNING, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        ),
    ).order_by("status_rank", "severity_rank", "-last_seen_at", "-id")


def alerts_needing_a_person(user, *, limit: int = 10) -> list[Alert]:
    """The user's tenant's open and acknowledged alerts, most urgent first (one query)."""
    visible = scope_to_user(Alert.objects.filter(status__in=ACTIVE_ALERT_STATUSES), user)
    return list(alerts_ordered(visible.select_related("connection"))[:limit])
