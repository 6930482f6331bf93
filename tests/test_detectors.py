"""Anomaly detectors and outbox consumers: the conditions they find become alerts, and clear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django_q.models import Schedule

from actions.models import ActionStatus
from budgetradar import outbox
from observability.models import Alert, AlertKind, AlertStatus, CircuitOpening, WorkerHeartbeat
from observability.services.detectors import performance_detectors_run, system_detectors_run
from platforms.models import CircuitState, EntityPerformanceDaily
from tests import factories

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # 13:00 in Berlin; yesterday is Thursday the 19th
YESTERDAY = NOW.date() - timedelta(days=1)


def day_of(campaign, day, conversions, spend) -> None:
    EntityPerformanceDaily.objects.update_or_create(
        entity=campaign, date=day, defaults={"tenant": campaign.tenant, "conversions": conversions, "spend": spend}
    )


@pytest.fixture
def campaign(connection_):
    campaign = factories.EntityFactory(connection=connection_)
    for weeks in range(1, 5):
        day_of(campaign, YESTERDAY - timedelta(weeks=weeks), Decimal("20"), Decimal("200"))
    return campaign


def active(kind) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind, status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]))


@pytest.mark.parametrize(("conversions", "fires"), [(Decimal("16"), False), (Decimal("15.98"), True)])
def test_conversions_drop_warning_at_its_threshold(campaign, conversions, fires):
    day_of(campaign, YESTERDAY, conversions, Decimal("200") * conversions / 20)  # CPA unchanged
    performance_detectors_run(now=NOW)
    assert bool(active(AlertKind.CONVERSIONS_DROP)) is fires
    assert not active(AlertKind.CPA_SPIKE)


@pytest.mark.parametrize(("spend", "fires"), [(Decimal("260"), False), (Decimal("260.20"), True)])
def test_cpa_spike_warning_at_its_threshold_and_clearing(campaign, spend, fires):
    day_of(campaign, YESTERDAY, Decimal("20"), spend)
    performance_detectors_run(now=NOW)
    assert bool(active(AlertKind.CPA_SPIKE)) is fires
    day_of(campaign, YESTERDAY, Decimal("20"), Decimal("200"))
    performance_detectors_run(now=NOW)
    assert not active(AlertKind.CPA_SPIKE)


def test_ingestion_failure_names_the_missing_day_and_clears(connection_, campaign):
    system_detectors_run(now=NOW)
    [alert] = active(AlertKind.INGESTION_FAILURE)
    assert str(YESTERDAY) in alert.title and alert.connection == connection_
    day_of(campaign, YESTERDAY, Decimal("20"), Decimal("200"))
    system_detectors_run(now=NOW)
    assert not active(AlertKind.INGESTION_FAILURE)


def test_stuck_actions_past_the_bound(connection_):
    entity = factories.EntityFactory(connection=connection_)
    action = factories.ActionFactory(entity=entity, status=ActionStatus.QUEUED)
    type(action).objects.filter(pk=action.pk).update(queued_at=NOW - timedelta(minutes=29))
    system_detectors_run(now=NOW)
    assert not active(AlertKind.STUCK_ACTIONS)
    type(action).objects.filter(pk=action.pk).update(queued_at=NOW - timedelta(minutes=31))
    system_detectors_run(now=NOW)
    assert "1 actions stuck" in active(AlertKind.STUCK_ACTIONS)[0].title


def test_worker_and_schedule_alerts_are_system_wide(settings):
    WorkerHeartbeat.objects.create(host="w1", pid=1, seen_at=NOW - timedelta(seconds=30))
    Schedule.objects.update(next_run=NOW + timedelta(minutes=1))
    system_detectors_run(now=NOW)
    assert not active(AlertKind.WORKER_DOWN) and not active(AlertKind.SCHEDULE_MISSED)
    WorkerHeartbeat.objects.update(seen_at=NOW - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS + 1))
    Schedule.objects.filter(name="actions: reconcile unsettled actions").update(next_run=NOW - timedelta(minutes=20))
    system_detectors_run(now=NOW)
    [worker] = active(AlertKind.WORKER_DOWN)
    [schedule] = active(AlertKind.SCHEDULE_MISSED)
    assert worker.tenant is None and schedule.tenant is None and "reconcile" in schedule.title


def drain(topic, tenant, **payload) -> None:
    with transaction.atomic():
        outbox.publish(topic, tenant_id=tenant.pk, payload=payload)
    outbox.outbox_drain()


def test_circuit_events_raise_record_and_resolve(tenant, connection_):
    connection_.circuit_state = CircuitState.OPEN
    connection_.save()
    drain("circuit.opened", tenant, connection_id=connection_.pk, reason="3 failed executions: auth_expired")
    [alert] = active(AlertKind.CIRCUIT_OPEN)
    assert "auth_expired" in alert.message and CircuitOpening.objects.get().connection == connection_
    connection_.circuit_state = CircuitState.CLOSED
    connection_.save()
    drain("circuit.closed", tenant, connection_id=connection_.pk, reason="reset by an admin")
    assert not active(AlertKind.CIRCUIT_OPEN)


def test_quota_failure_alerts_until_a_job_succeeds(tenant, connection_):
    entity = factories.EntityFactory(connection=connection_)
    action = factories.ActionFactory(entity=entity, status=ActionStatus.FAILED)
    settled = {"action_id": action.pk, "connection_id": connection_.pk, "entity_id": entity.pk, "platform": "sandbox"}
    drain("action.settled", tenant, **settled, deployment_id=None, status="failed", error_code="rate_limited")
    assert active(AlertKind.QUOTA_EXCEEDED)[0].severity == "critical"
    drain(
        "job.finished",
        tenant,
        job_id=1,
        connection_id=connection_.pk,
        kind="execute",
        status="failed",
        connection_failed=True,
        round_trips=3,
    )
    assert active(AlertKind.QUOTA_EXCEEDED)
    drain(
        "job.finished",
        tenant,
        job_id=2,
        connection_id=connection_.pk,
        kind="execute",
        status="succeeded",
        connection_failed=False,
        round_trips=1,
    )
    assert not active(AlertKind.QUOTA_EXCEEDED)


def test_planner_failures_alert_and_a_success_resolves(tenant, connection_):
    drain(
        "planner.run_finished",
        tenant,
        run_id="r1",
        connection_id=connection_.pk,
        status="failed",
        fallback_level="",
        error="the curve fit diverged",
    )
    [alert] = active(AlertKind.OPTIMIZER_FAILURE)
    assert "diverged" in alert.message
    drain(
        "planner.run_finished",
        tenant,
        run_id="r2",
        connection_id=connection_.pk,
        status="succeeded",
        fallback_level="curves",
        error="",
    )
    assert not active(AlertKind.OPTIMIZER_FAILURE)


def test_a_failing_consumer_never_blocks_the_outbox(tenant):
    drain("circuit.opened", tenant, connection_id="not-an-id")
    assert not outbox.OutboxEvent.objects.filter(processed_at__isnull=True).exists()
