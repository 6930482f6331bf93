"""/health/ready: 200 when database, broker, workers and schedules are fine; 503 naming what is not."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule, Task

from observability.models import WorkerHeartbeat
from observability.services import health
from observability.tasks import heartbeat_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def healthy():
    """A worker ran the heartbeat schedule just now and every schedule is due in the future."""
    heartbeat_task()
    Schedule.objects.update(next_run=timezone.now() + timedelta(minutes=1))


def ready():
    response = Client().get("/health/ready")
    return response.status_code, response.json()


def test_ready_when_every_dependency_answers(healthy):
    status, body = ready()
    assert status == 200 and body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "workers", "schedules"}
    assert Client().get("/health").status_code == 200  # liveness is unchanged


def test_database_down_is_named(healthy, monkeypatch):
    class Down:
        vendor = "postgresql"

        def cursor(self):
            raise OperationalError("connection to server at 127.0.0.1:5432 refused")

    monkeypatch.setattr(health, "connection", Down())
    status, body = ready()
    assert status == 503 and body["failing"] == ["database"]
    assert "refused" in body["checks"]["database"]["detail"]


def test_broker_down_is_named(healthy, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{closed}/0")
    status, body = ready()
    assert status == 503 and body["failing"] == ["broker"]
    assert "ConnectionError" in body["checks"]["broker"]["detail"]


def test_no_worker_heartbeat_is_named(healthy):
    WorkerHeartbeat.objects.all().delete()
    status, body = ready()
    assert status == 503 and body["failing"] == ["workers"]
    assert "qcluster" in body["checks"]["workers"]["detail"]


def test_a_stale_heartbeat_is_named(healthy, settings):
    WorkerHeartbeat.objects.update(
        seen_at=timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS + 5)
    )
    status, body = ready()
    assert status == 503 and body["failing"] == ["workers"] and "limit" in body["checks"]["workers"]["detail"]


def test_heartbeat_just_inside_the_limit_is_fine(healthy, settings):
    WorkerHeartbeat.objects.update(
        seen_at=timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS - 5)
    )
    assert ready()[0] == 200


def test_an_overdue_schedule_is_named_with_its_last_run(healthy, settings):
    late = timezone.now() - timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS + 60)
    Schedule.objects.filter(name="actions: reconcile unsettled actions").update(next_run=late)
    status, body = ready()
    assert status == 503 and body["failing"] == ["schedules"]
    detail = body["checks"]["schedules"]["detail"]
    assert "actions: reconcile unsettled actions overdue by" in detail and "never ran" in detail


def test_an_overdue_schedules_last_run_is_named_in_the_deployments_zone(healthy, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    stopped = datetime(2026, 12, 2, 13, 3, 7, tzinfo=UTC)
    task = Task.objects.create(
        id="t-reconcile", name="reconcile", func="x", started=stopped, stopped=stopped, success=True
    )
    late = timezone.now() - timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS + 60)
    Schedule.objects.filter(name="actions: reconcile unsettled actions").update(next_run=late, task=task.id)
    detail = ready()[1]["checks"]["schedules"]["detail"]
    assert "(last run succeeded at 2026-12-02 14:03:07 CET)" in detail


def test_a_schedule_late_within_the_grace_is_fine(healthy, settings):
    Schedule.objects.update(next_run=timezone.now() - timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS - 30))
    assert ready()[0] == 200
