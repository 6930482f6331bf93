"""Idempotent requests, code-declared schedules, the worker command and django-q2 tasks."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django_q.models import Schedule
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionJob, ActionStatus
from actions.schedules import SCHEDULES, schedules_sync
from actions.tasks import process_job_task, reconcile_task
from tests.engine_helpers import approved, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


def api_as(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_same_idempotency_key_and_request_replays_the_first_answer(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    api = api_as(approver)
    first = api.post(f"/api/actions/{action.pk}/execute", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(f"/api/actions/{action.pk}/execute", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert ActionJob.objects.count() == 1


def test_same_idempotency_key_for_a_different_request_is_409(world, approver):
    one = approved(world.entity("sandbox-cmp-1"), approver)
    two = approved(world.entity("sandbox-cmp-2"), approver)
    api = api_as(approver)
    assert api.post(f"/api/actions/{one.pk}/execute", {"idempotency_key": "k-2"}, format="json").status_code == 202
    response = api.post(f"/api/actions/{two.pk}/execute", {"idempotency_key": "k-2"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "idempotency_key_reused"
    assert Action.objects.get(pk=two.pk).status == ActionStatus.APPROVED


def test_schedules_are_declared_in_code_and_upserted_idempotently():
    schedules_sync()
    schedules_sync()
    # Other apps declare their own (planning's tick); the actions schedules are these.
    assert Schedule.objects.filter(name__startswith="actions:").count() == len(SCHEDULES)
    reconcile = Schedule.objects.get(name="actions: reconcile stuck actions")
    assert (reconcile.func, reconcile.minutes) == ("actions.tasks.reconcile_task", 5)
    assert Schedule.objects.get(name="actions: process rollbacks").minutes == 10


def test_action_worker_command_runs_the_same_services(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    out = StringIO()
    call_command("action_worker", "process", stdout=out)
    assert "succeeded" in out.getvalue()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
    call_command("action_worker", "reconcile", stdout=out)
    assert "reconciled" in out.getvalue()


def test_tasks_take_ids_and_running_one_twice_is_harmless(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    call_command("action_worker", "dispatch", stdout=StringIO())
    job = ActionJob.objects.get()
    assert "succeeded" in process_job_task(job.pk)
    assert "already claimed" in process_job_task(job.pk)
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
    assert world.applied_count("sandbox-cmp-1") == 1
    assert "jobs=0" in reconcile_task()
