"""Raising, refreshing, acknowledging and resolving alerts, and routing them to channels.

Guarantees:
- One active alert per dedup key (a partial unique index): raising a condition that is
  already open only moves ``last_seen_at`` and counts the occurrence, so a condition
  alerts once until it is resolved; concurrent raises of one key make one alert.
- A new alert writes, in its own transaction, one ``trigger`` delivery per active
  channel of its tenant that takes its severity; resolving writes a ``resolve``
  delivery for every channel that was sent (or will be sent) the trigger. Sending is a
  worker's job after commit (``observability.services.delivery``): nothing here touches
  the network, so it may run inside an outbox consumer's transaction.
- ``alerts_sync`` is how detectors report: it raises every condition found and
  resolves, as "condition cleared", the kind's active alerts in its scope that were
  not found again.
- People acknowledge and resolve through ``alert_acknowledge`` / ``alert_resolve``,
  which check the role's permission and the tenant (another tenant's alert is 404).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from budgetradar.errors import NotFound
from budgetradar.queue import enqueue_on_commit
from budgetradar.tenancy import is_platform_staff, require_perm, require_same_tenant
from observability.metrics import alert_raised_record
from observability.models import (
    ACTIVE_ALERT_STATUSES,
    Alert,
    AlertKind,
    AlertStatus,
    Channel,
    ChannelKind,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    Severity,
)

SEND_TASK = "observability.tasks.deliveries_send_task"


@dataclass(frozen=True)
class Condition:
    """A detector's finding: what an alert for it says and which key deduplicates it."""

    kind: str
    severity: str
    dedup_key: str
    title: str
    message: str
    tenant_id: int | None
    connection_id: int | None = None
    deployment_id: int | None = None
    action_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def dedup_key(kind: str, tenant_id: int | None, *parts: object) -> str:
    """``kind:tenant:part…`` — the identity of a condition (``system`` when tenant-less)."""
    return ":".join([kind, str(tenant_id if tenant_id is not None else "system"), *map(str, parts)])[:200]


def alert_raise(condition: Condition, *, now: datetime | None = None) -> tuple[Alert, bool]:
    """Open an alert for ``condition`` or refresh its open one; True when it is new."""
    now = now or timezone.now()
    with transaction.atomic():
        existing = _active(condition.dedup_key)
        if existing is not None:
            return _seen_again(existing, condition, now), False
        try:
            with transaction.atomic():  # a savepoint: a concurrent raise may win the unique key
                alert = Alert.objects.create(
                    tenant_id=condition.tenant_id,
                    kind=condition.kind,
                    severity=condition.severity,
                    dedup_key=condition.dedup_key,
                    title=condition.title[:200],
                    message=condition.message,
                    connection_id=condition.connection_id,
                    deployment_id=condition.deployment_id,
                    action_id=condition.action_id,
                    details=condition.details,
                    first_seen_at=now,
                    last_seen_at=now,
                )
        except IntegrityError:
            return _seen_again(_active(condition.dedup_key), condition, now), False
        routed = channels_for(alert)
        _deliveries(alert, routed, DeliveryEvent.TRIGGER, now)
        severity, kind = alert.severity, alert.kind
        transaction.on_commit(lambda: alert_raised_record(severity=severity, kind=kind))
    return alert, True


def _active(key: str) -> Alert | None:
    return Alert.objects.select_for_update().filter(dedup_key=key, status__in=ACTIVE_ALERT_STATUSES).first()


def _seen_again(alert: Alert, condition: Condition, now: datetime) -> Alert:
    """Refresh what the alert says (figures change) without alerting again."""
    Alert.objects.filter(pk=alert.pk).update(
        last_seen_at=now,
        occurrences=F("occurrences") + 1,
        title=condition.title[:200],
        message=condition.message,
        details=condition.details,
    )
    alert.refresh_from_db()
    return alert


def channels_for(alert: Alert) -> list[Channel]:
    """The active channels of the alert's tenant (staff channels for system alerts) that take its severity."""
    channels = Channel.objects.filter(tenant_id=alert.tenant_id, is_active=True).order_by("id")
    return [c for c in channels if alert.severity in (c.severities or [])]


def _deliveries(alert: Alert, channels: Iterable[Channel], event: str, now: datetime) -> int:
    rows = [
        Delivery(tenant_id=alert.tenant_id, alert=alert, channel=c, event=event, next_attempt_at=now) for c in channels
    ]
    Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    if rows:
        enqueue_on_commit(SEND_TASK, task_name=None, group="alerts")
    return len(rows)


def alert_resolve_system(alert: Alert, *, reason: str, now: datetime | None = None) -> bool:
    """Resolve an active alert because its condition cleared; False if it was not active."""
    return _resolve(alert, by=None, resolution=f"Condition cleared: {reason}", now=now or timezone.now())


def _resolve(alert: Alert, *, by, resolution: str, now: datetime) -> bool:
    with transaction.atomic():
        moved = Alert.objects.filter(pk=alert.pk, status__in=ACTIVE_ALERT_STATUSES).update(
            status=AlertStatus.RESOLVED, resolved_at=now, resolved_by=by, resolution=resolution[:500]
        )
        if moved != 1:
            return False
        told = Channel.objects.filter(
            deliveries__alert=alert,
            deliveries__event__in=[DeliveryEvent.TRIGGER, DeliveryEvent.TEST],
            deliveries__status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.SENT],
        ).distinct()
        _deliveries(alert, told, DeliveryEvent.RESOLVE, now)
    alert.refresh_from_db()
    return True


def alert_resolve(*, alert: Alert, actor, reason: str = "") -> Alert:
    """A person resolves an alert (it alerts again if the condition comes back)."""
    _require_visible(actor, alert)
    require_perm(actor, "observability.resolve_alert", doing="resolve alerts")
    name = getattr(actor, "username", "someone")
    _resolve(alert, by=actor, resolution=f"Resolved by {name}" + (f": {reason}" if reason else ""), now=timezone.now())
    alert.refresh_from_db()
    return alert


def _require_visible(actor, alert: Alert) -> None:
    """Another tenant's alert, or a system alert for a tenant member, is not found."""
    if alert.tenant_id is not None:
        require_same_tenant(actor, alert.tenant, what="alert")
    elif not is_platform_staff(actor):
        raise NotFound("No alert found.")


def alert_acknowledge(*, alert: Alert, actor) -> Alert:
    """A person says they are on it; the alert stays active (and deduplicating) until resolved."""
    _require_visible(actor, alert)
    require_perm(actor, "observability.acknowledge_alert", doing="acknowledge alerts")
    Alert.objects.filter(pk=alert.pk, status=AlertStatus.OPEN).update(
        status=AlertStatus.ACKNOWLEDGED, acknowledged_by=actor, acknowledged_at=timezone.now()
    )
    alert.refresh_from_db()
    return alert


def alerts_sync(
    kind: str, conditions: Iterable[Condition], *, scope: Q | None = None, now: datetime | None = None
) -> tuple[int, int]:
    """Raise what a detector found and resolve its kind's active alerts (within ``scope``)
    that it did not find again; return (new alerts, resolved alerts)."""
    now = now or timezone.now()
    found = {}
    for condition in conditions:
        found[condition.dedup_key] = condition
    new = sum(1 for condition in found.values() if alert_raise(condition, now=now)[1])
    active = Alert.objects.filter(kind=kind, status__in=ACTIVE_ALERT_STATUSES).exclude(dedup_key__in=list(found))
    if scope is not None:
        active = active.filter(scope)
    cleared = sum(1 for alert in active if alert_resolve_system(alert, reason=f"{kind} not found any more", now=now))
    return new, cleared


def alert_resolve_key(key: str, *, reason: str) -> bool:
    """Resolve the active alert with ``key`` (event-driven detectors: a circuit closed)."""
    alert = Alert.objects.filter(dedup_key=key, status__in=ACTIVE_ALERT_STATUSES).first()
    return bool(alert) and alert_resolve_system(alert, reason=reason)


def channel_send_test(*, channel: Channel, actor) -> Alert:
    """Queue a test alert to this channel alone, whatever severities it takes.

    The test alert is recorded as resolved at once (nobody has to act on it); PagerDuty
    is sent a resolve right after the trigger, so no incident stays open.
    """
    if channel.tenant_id is not None:
        require_same_tenant(actor, channel.tenant, what="channel")
    elif not is_platform_staff(actor):
        raise NotFound("No channel found.")
    require_perm(actor, "observability.test_channel", doing="send test alerts")
    now = timezone.now()
    name = getattr(actor, "username", "someone")
    with transaction.atomic():
        alert = Alert.objects.create(
            tenant_id=channel.tenant_id,
            kind=AlertKind.TEST,
            severity=Severity.INFO,
            status=AlertStatus.RESOLVED,
            dedup_key=f"test:{channel.pk}:{uuid.uuid4().hex[:12]}",
            title=f"Test alert for channel {channel.name}",
            message=f"{name} sent this test from BudgetRadar. If you can read it, alerts reach this channel.",
            details={"channel": channel.name},
            first_seen_at=now,
            last_seen_at=now,
            resolved_at=now,
            resolution="A test alert needs nobody.",
        )
        _deliveries(alert, [channel], DeliveryEvent.TEST, now)
        if channel.kind == ChannelKind.PAGERDUTY:
            _deliveries(alert, [channel], DeliveryEvent.RESOLVE, now)
    return alert
