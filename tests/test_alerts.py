"""Alerts: dedup while open, resolve by a person or when the condition clears, routing by severity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from budgetradar.errors import NotFound, PermissionDenied
from budgetradar.outbox import Event
from budgetradar.timefmt import format_time
from observability.consumers import on_action_parked
from observability.models import Alert, AlertKind, AlertStatus, Channel, ChannelKind, Delivery, DeliveryEvent, Severity
from observability.services.alerts import (
    Condition,
    alert_acknowledge,
    alert_raise,
    alert_resolve,
    alerts_sync,
    channel_send_test,
    dedup_key,
)
from tests import factories

pytestmark = pytest.mark.django_db


def condition(
    tenant, key="c1", severity=Severity.CRITICAL, kind=AlertKind.CIRCUIT_OPEN, message="Fix it."
) -> Condition:
    return Condition(
        kind=kind,
        severity=severity,
        dedup_key=dedup_key(kind, tenant.pk, key),
        title=f"Circuit open on {key}",
        message=message,
        tenant_id=tenant.pk,
    )


def channel(tenant, kind=ChannelKind.WEBHOOK, severities=("critical",), name="Ops") -> Channel:
    config = {"url": "https://hooks.example.com/x", "secret": "s" * 20}
    return Channel.objects.create(tenant=tenant, name=name, kind=kind, severities=list(severities), config=config)


def test_a_condition_alerts_once_until_resolved(tenant):
    first, new = alert_raise(condition(tenant))
    again, new_again = alert_raise(condition(tenant, message="Still broken."))
    assert new and not new_again and again.pk == first.pk
    assert again.occurrences == 2 and again.message == "Still broken." and again.last_seen_at >= first.first_seen_at
    assert Alert.objects.count() == 1


def test_after_resolve_the_same_condition_opens_a_new_alert(tenant, tenant_admin):
    alert, _ = alert_raise(condition(tenant))
    alert_resolve(alert=alert, actor=tenant_admin, reason="fixed the token")
    reopened, new = alert_raise(condition(tenant))
    assert new and reopened.pk != alert.pk
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED and alert.resolved_by == tenant_admin
    assert "fixed the token" in alert.resolution


def test_sync_resolves_what_the_detector_no_longer_finds(tenant):
    alerts_sync(AlertKind.CIRCUIT_OPEN, [condition(tenant, "a"), condition(tenant, "b")])
    new, cleared = alerts_sync(AlertKind.CIRCUIT_OPEN, [condition(tenant, "b")])
    assert (new, cleared) == (0, 1)
    statuses = dict(Alert.objects.values_list("title", "status"))
    assert statuses == {"Circuit open on a": AlertStatus.RESOLVED, "Circuit open on b": AlertStatus.OPEN}
    assert Alert.objects.get(title="Circuit open on a").resolution.startswith("Condition cleared")


def test_sync_leaves_other_kinds_alone(tenant):
    alert_raise(condition(tenant, "x", kind=AlertKind.STUCK_ACTIONS))
    alerts_sync(AlertKind.CIRCUIT_OPEN, [])
    assert Alert.objects.get().status == AlertStatus.OPEN


def test_routing_by_severity_writes_one_delivery_per_matching_channel(tenant, other_tenant):
    pager = channel(tenant, ChannelKind.PAGERDUTY, ["critical"], "Pager")
    chat = channel(tenant, ChannelKind.SLACK, ["warning", "critical"], "Chat")
    channel(other_tenant, ChannelKind.SLACK, ["warning", "critical"], "Theirs")
    Channel.objects.filter(pk=channel(tenant, name="Off").pk).update(is_active=False)
    alert_raise(condition(tenant, "crit"))
    alert_raise(condition(tenant, "warn", severity=Severity.WARNING))
    routed = sorted(Delivery.objects.values_list("alert__title", "channel__name"))
    assert routed == [
        ("Circuit open on crit", "Chat"),
        ("Circuit open on crit", "Pager"),
        ("Circuit open on warn", "Chat"),
    ]
    assert {pager.pk, chat.pk} >= set(Delivery.objects.values_list("channel_id", flat=True))


def test_resolving_tells_the_channels_that_heard_the_trigger(tenant, tenant_admin):
    channel(tenant, ChannelKind.PAGERDUTY, ["critical"], "Pager")
    channel(tenant, ChannelKind.SLACK, ["warning"], "Chat")
    alert, _ = alert_raise(condition(tenant))
    alert_resolve(alert=alert, actor=tenant_admin)
    events = sorted(Delivery.objects.values_list("channel__name", "event"))
    assert events == [("Pager", DeliveryEvent.RESOLVE), ("Pager", DeliveryEvent.TRIGGER)]


def test_acknowledge_keeps_the_alert_deduplicating(tenant, operator):
    alert, _ = alert_raise(condition(tenant))
    alert_acknowledge(alert=alert, actor=operator)
    again, new = alert_raise(condition(tenant))
    assert not new and again.status == AlertStatus.ACKNOWLEDGED and again.acknowledged_by == operator


def test_roles_and_tenants_are_checked(tenant, viewer, operator, other_admin):
    alert, _ = alert_raise(condition(tenant))
    with pytest.raises(PermissionDenied, match="acknowledge alerts"):
        alert_acknowledge(alert=alert, actor=viewer)
    with pytest.raises(PermissionDenied, match="resolve alerts"):
        alert_resolve(alert=alert, actor=operator)
    with pytest.raises(NotFound):
        alert_resolve(alert=alert, actor=other_admin)
    system, _ = alert_raise(
        Condition(AlertKind.WORKER_DOWN, Severity.CRITICAL, "worker", "No worker", "Start one.", None)
    )
    with pytest.raises(NotFound):
        alert_acknowledge(alert=system, actor=operator)


def test_a_test_alert_goes_to_that_channel_only_and_needs_nobody(tenant, tenant_admin):
    target = channel(tenant, ChannelKind.PAGERDUTY, ["critical"], "Pager")
    channel(tenant, ChannelKind.SLACK, ["info", "warning", "critical"], "Chat")
    alert = channel_send_test(channel=target, actor=tenant_admin)
    assert alert.status == AlertStatus.RESOLVED and alert.kind == AlertKind.TEST
    events = list(Delivery.objects.order_by("id").values_list("channel__name", "event"))
    assert events == [("Pager", DeliveryEvent.TEST), ("Pager", DeliveryEvent.RESOLVE)]


def test_only_admins_send_test_alerts(tenant, approver):
    with pytest.raises(PermissionDenied, match="send test alerts"):
        channel_send_test(channel=channel(tenant), actor=approver)


def test_system_alerts_go_to_staff_channels():
    staff = Channel.objects.create(
        tenant=None, name="Staff", kind=ChannelKind.SLACK, severities=["critical"], config={"webhook_url": "x"}
    )
    factories.TenantFactory(slug="x")
    alert, _ = alert_raise(
        Condition(AlertKind.WORKER_DOWN, Severity.CRITICAL, "worker", "No worker", "Start one.", None)
    )
    assert list(Delivery.objects.values_list("alert_id", "channel_id")) == [(alert.pk, staff.pk)]


def test_a_long_parked_action_alert_names_the_time_in_the_accounts_zone(tenant):
    connection = factories.ConnectionFactory(tenant=tenant, time_zone="Europe/Berlin")
    action = factories.ActionFactory(entity=factories.EntityFactory(connection=connection))
    until = timezone.now() + timedelta(days=30)
    payload = {"connection_id": connection.pk, "action_id": action.pk, "next_attempt_at": until.isoformat()}
    on_action_parked([Event(id=1, topic="action.parked", tenant_id=tenant.pk, payload=payload)])
    alert = Alert.objects.get(kind=AlertKind.PARKED_ACTIONS)
    assert f"was parked until {format_time(until, 'Europe/Berlin')}, longer than" in alert.message
    assert "UTC" not in alert.message
