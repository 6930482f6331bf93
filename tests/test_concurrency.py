"""Races that only PostgreSQL can reproduce: concurrent requests and competing workers."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionJob, ActionStatus
from actions.services.dispatch import actions_dispatch
from actions.services.engine import job_claim
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def race(count: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(i)`` in ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:  # the assertion below shows it
            results[i] = exc
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_twenty_concurrent_execute_requests_execute_the_action_once(tenant, approver):
    world = sandbox_world(tenant)
    action = approved(world.entity("sandbox-cmp-1"), approver)
    token = Token.objects.create(user=approver).key

    def execute(_i: int) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client.post(f"/api/actions/{action.pk}/execute").status_code

    assert race(20, execute) == [202] * 20
    assert ActionJob.objects.count() == 1
    assert Action.objects.get(pk=action.pk).status == ActionStatus.QUEUED
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
    assert world.applied_count("sandbox-cmp-1") == 1


def test_twenty_concurrent_requests_with_one_idempotency_key_give_one_answer(tenant, approver):
    world = sandbox_world(tenant)
    action = approved(world.entity("sandbox-cmp-1"), approver)
    token = Token.objects.create(user=approver).key

    def execute(_i: int):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}", HTTP_IDEMPOTENCY_KEY="double-click-1")
        response = client.post(f"/api/actions/{action.pk}/execute")
        return response.status_code, response.json()["id"]

    assert set(race(20, execute)) == {(202, action.pk)}
    assert ActionJob.objects.count() == 1


def test_two_workers_racing_for_one_job_only_one_claims_it(tenant, approver):
    world = sandbox_world(tenant)
    approved(world.entity("sandbox-cmp-1"), approver)
    [job_id] = actions_dispatch()
    claims = race(2, lambda i: job_claim(job_id=job_id, token=f"worker-{i}"))
    assert sum(1 for c in claims if c is not None) == 1, claims


def test_concurrent_dispatchers_create_one_job_per_connection(tenant, approver):
    world = sandbox_world(tenant)
    for ext in ("sandbox-cmp-1", "sandbox-cmp-2"):
        approved(world.entity(ext), approver)
    race(8, lambda _i: actions_dispatch())
    assert ActionJob.objects.count() == 1
    assert Action.objects.filter(status=ActionStatus.QUEUED).count() == 2


def test_fifty_concurrent_identical_deploys_make_one_deployment_and_one_set_of_mutations(tenant, approver):
    from decimal import Decimal

    from scenarios.models import Deployment, Scenario, ScenarioItem
    from scenarios.services.deploy import deployment_create
    from scenarios.services.preflight import preflight_for_scenario

    world = sandbox_world(tenant)
    scenario = Scenario.objects.create(tenant=tenant, name="Race")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("150"))
    preflight_for_scenario(scenario=scenario, actor=approver)
    scenario = Scenario.objects.get(pk=scenario.pk)

    def deploy(_i: int):
        result = deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key="same-click")
        return result.response["id"]

    ids = race(50, deploy)
    assert len(set(ids)) == 1 and all(isinstance(i, int) for i in ids), ids
    assert Deployment.objects.count() == 1 and Action.objects.count() == 1
    run_worker()
    assert world.applied_count("sandbox-cmp-1") == 1
