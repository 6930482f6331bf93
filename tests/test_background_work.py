"""Heavy work off the request path: preflights, live deploys, dry runs and retries of failed
entities above the synchronous line answer 202 with a progress URL and finish in a
django-q2 task; a preflight's age counts from when its reads finished, against its
platforms' limit."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionStatus
from budgetradar.roles import Role
from budgetradar.transactions import in_transaction
from platforms.models import CircuitState
from platforms.sandbox.executor import SandboxExecutor
from scenarios.models import Deployment, GuardrailPolicy, PreflightRun, Scenario, ScenarioItem
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import preflight_for_scenario, preflight_is_fresh, preflight_max_age
from scenarios.tasks import (
    deployment_dry_run_task,
    deployment_prepare_task,
    deployment_retry_task,
    preflight_task,
)
from tests.engine_helpers import run_worker, sandbox_world
from tests.factories import TenantFactory, member

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def world(tenant, tmp_path, settings):
    settings.STATE_DIR = tmp_path / "state"
    return sandbox_world(tenant, campaigns=3, ad_sets_per_campaign=1)


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    """What would be handed to django-q2 (the tests run the tasks themselves)."""
    calls: list[tuple] = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr("budgetradar.queue.async_task", lambda *args, **kwargs: calls.append(args))
    return calls


@pytest.fixture
def scenario(world, operator):
    scenario = Scenario.objects.create(tenant=world.connection.tenant, name="Big shift", created_by=operator)
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("150.00"))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-2"), status="paused")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-adset-3-1"), bid=Decimal("2.00"))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-3"), daily_budget=Decimal("100.00"))
    return scenario


def tasks_named(enqueued, name: str) -> list[int]:
    return [args[1] for args in enqueued if args[0] == name]


# Preflight ---------------------------------------------------------------------------------


def test_a_preflight_above_the_line_answers_202_and_finishes_in_the_task(world, scenario, operator, enqueued, settings):
    settings.PREFLIGHT_SYNC_MAX_ENTITIES = 3
    api = client_for(operator)
    response = api.post(f"/api/scenarios/{scenario.pk}/preflight", {"mode": "manual"}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    run = PreflightRun.objects.get()
    assert (body["run_id"], body["status"]) == (run.run_id, "queued")
    assert body["progress"]["url"] == f"/api/preflights/{run.run_id}"
    assert (body["progress"]["entities_total"], body["progress"]["entities_read"]) == (4, 0)
    assert "entities" not in body  # nothing was read in the request
    assert tasks_named(enqueued, "scenarios.tasks.preflight_task") == [run.pk]
    assert run.scenario_id == scenario.pk and len(run.inputs) == 4

    assert preflight_task(run.pk) == f"preflight {run.run_id}: succeeded"
    polled = api.get(body["progress"]["url"])
    assert polled.status_code == 200
    document = polled.json()
    assert document["status"] == "succeeded" and document["summary"]["changed"] == 3
    assert document["progress"]["entities_read"] == 4 and document["progress"]["reads_finished_at"]
    run.refresh_from_db()
    assert run.started_at <= run.reads_finished_at <= run.finished_at


def test_a_preflight_at_the_line_stays_in_the_request(world, scenario, operator, enqueued, settings):
    settings.PREFLIGHT_SYNC_MAX_ENTITIES = 4
    response = client_for(operator).post(f"/api/scenarios/{scenario.pk}/preflight")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert not tasks_named(enqueued, "scenarios.tasks.preflight_task")


def test_another_tenants_preflight_progress_is_404(world, scenario, operator, enqueued, settings):
    run = preflight_for_scenario(scenario=scenario, actor=operator)
    stranger = member(TenantFactory(slug="globex"), Role.OPERATOR, "globex-operator")
    assert client_for(stranger).get(f"/api/preflights/{run.run_id}").status_code == 404


def test_the_admin_sends_a_large_preflight_to_a_worker_and_its_page_shows_progress(
    client, world, scenario, operator, enqueued, settings
):
    settings.PREFLIGHT_SYNC_MAX_ENTITIES = 3
    client.force_login(operator)
    response = client.post(f"/admin/scenarios/scenario/{scenario.pk}/preflight/", follow=True)
    run = PreflightRun.objects.get()
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/admin/scenarios/preflightrun/{run.pk}/change/"
    assert "runs in a worker" in page and "0 of 4 entities read" in page
    assert 'http-equiv="refresh"' in page
    preflight_task(run.pk)
    page = client.get(f"/admin/scenarios/preflightrun/{run.pk}/change/").content.decode()
    assert "4 of 4 entities read" in page and 'http-equiv="refresh"' not in page


# Live deploy --------------------------------------------------------------------------------


def test_a_live_deploy_above_the_line_answers_202_and_the_task_creates_and_dispatches_its_actions(
    world, scenario, approver, enqueued, settings
):
    preflight_for_scenario(scenario=scenario, actor=approver)
    settings.DEPLOY_SYNC_MAX_ENTITIES = 2
    api = client_for(approver)
    response = api.post(f"/api/scenarios/{scenario.pk}/deploy", {"mode": "live", "idempotency_key": "big-1"})
    assert response.status_code == 202, response.json()
    body = response.json()
    deployment = Deployment.objects.get()
    assert (body["id"], body["status"], body["prepared_at"]) == (deployment.pk, "queued", None)
    assert body["progress_url"] == f"/api/deployments/{deployment.pk}" and body["results"] == []
    assert not Action.objects.exists()  # nothing is created in the request
    assert tasks_named(enqueued, "scenarios.tasks.deployment_prepare_task") == [deployment.pk]

    assert deployment_prepare_task(deployment.pk) == f"deployment {deployment.pk}: queued"
    assert deployment_prepare_task(deployment.pk) == f"deployment {deployment.pk}: already prepared"
    statuses = list(Action.objects.filter(deployment=deployment).values_list("status", flat=True))
    assert statuses == [ActionStatus.QUEUED] * 3, "the task dispatches its actions after its commit"
    assert tasks_named(enqueued, "actions.tasks.process_job_task")
    polled = api.get(body["progress_url"]).json()
    assert polled["prepared_at"] and polled["counts"]["total"] == 4 and polled["counts"]["pending"] == 3
    run_worker()
    assert Deployment.objects.get().status == Deployment.Status.SUCCEEDED
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")


def test_a_replayed_large_deploy_is_one_deployment(world, scenario, approver, enqueued, settings):
    preflight_for_scenario(scenario=scenario, actor=approver)
    settings.DEPLOY_SYNC_MAX_ENTITIES = 2
    api = client_for(approver)
    url = f"/api/scenarios/{scenario.pk}/deploy"
    first = api.post(url, {"mode": "live", "idempotency_key": "big-1"})
    again = api.post(url, {"mode": "live", "idempotency_key": "big-1"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert Deployment.objects.count() == 1
    assert len(tasks_named(enqueued, "scenarios.tasks.deployment_prepare_task")) == 1


def test_what_the_worker_refuses_fails_the_deployment_with_the_reason(world, scenario, approver, enqueued, settings):
    preflight_for_scenario(scenario=scenario, actor=approver)
    settings.DEPLOY_SYNC_MAX_ENTITIES = 2
    response = client_for(approver).post(
        f"/api/scenarios/{scenario.pk}/deploy", {"mode": "live", "idempotency_key": "big-1"}
    )
    assert response.status_code == 202
    world.connection.circuit_state, world.connection.circuit_opened_at = CircuitState.OPEN, timezone.now()
    world.connection.save()
    deployment_prepare_task(response.json()["id"])
    deployment = Deployment.objects.get()
    assert deployment.status == Deployment.Status.FAILED and deployment.finished_at is not None
    assert "circuit" in deployment.error_message.lower()
    assert not Action.objects.exists()


def test_a_large_deploy_refused_up_front_is_the_requests_answer(world, scenario, approver, enqueued, settings):
    preflight_for_scenario(scenario=scenario, actor=approver)
    settings.DEPLOY_SYNC_MAX_ENTITIES = 2
    world.connection.circuit_state, world.connection.circuit_opened_at = CircuitState.OPEN, timezone.now()
    world.connection.save()
    response = client_for(approver).post(
        f"/api/scenarios/{scenario.pk}/deploy", {"mode": "live", "idempotency_key": "big-1"}
    )
    assert response.status_code == 409, response.json()
    assert not Deployment.objects.exists()
    assert not tasks_named(enqueued, "scenarios.tasks.deployment_prepare_task")


# Freshness ---------------------------------------------------------------------------------


def test_a_preflights_age_counts_from_when_its_reads_finished(world, scenario, approver, enqueued):
    run = preflight_for_scenario(scenario=scenario, actor=approver)
    # A long preflight: begun two hours ago, its last read returned five minutes ago.
    PreflightRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(hours=2), reads_finished_at=timezone.now() - timedelta(minutes=5)
    )
    Scenario.objects.filter(pk=scenario.pk).update(updated_at=timezone.now() - timedelta(hours=3))
    response = client_for(approver).post(
        f"/api/scenarios/{scenario.pk}/deploy", {"mode": "live", "idempotency_key": "late-1"}
    )
    assert response.status_code == 202, response.json()


def test_the_freshness_limit_is_per_platform(world, scenario, approver, settings):
    run = preflight_for_scenario(scenario=scenario, actor=approver)
    assert preflight_max_age(run) == timedelta(minutes=30)
    assert not preflight_is_fresh(run, now=run.reads_finished_at + timedelta(minutes=45))
    settings.PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM = {**settings.PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM, "sandbox": 60}
    assert preflight_max_age(run) == timedelta(minutes=60)
    assert preflight_is_fresh(run, now=run.reads_finished_at + timedelta(minutes=45))


def test_meta_is_trusted_longer_than_google_by_default(settings):
    limits = settings.PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM
    assert limits["meta"] == 60 and limits["google_ads"] == limits["sandbox"] == settings.PREFLIGHT_MAX_AGE_MINUTES


def test_the_deployment_page_says_a_worker_is_preparing_it(client, world, scenario, approver, enqueued, settings):
    preflight_for_scenario(scenario=scenario, actor=approver)
    settings.DEPLOY_SYNC_MAX_ENTITIES = 2
    body = client_for(approver).post(
        f"/api/scenarios/{scenario.pk}/deploy", {"mode": "live", "idempotency_key": "big-1"}
    )
    client.force_login(approver)
    url = f"/admin/scenarios/deployment/{body.json()['id']}/change/"
    page = client.get(url).content.decode()
    assert "A worker is creating this deployment's actions and per-entity results (3 changed entities)" in page
    assert 'http-equiv="refresh"' in page
    deployment_prepare_task(body.json()["id"])
    page = client.get(url).content.decode()
    assert "A worker is creating" not in page
    assert "1 of 4 entities settled" in page  # the unchanged entity is settled as skipped


# Platform calls outside transactions ------------------------------------------------------------


@pytest.fixture
def platform_calls(monkeypatch) -> list[tuple[str, bool]]:
    """Every sandbox read and write as (kind, whether a transaction was open)."""
    calls: list[tuple[str, bool]] = []
    read, apply = SandboxExecutor.read_state, SandboxExecutor.apply

    def read_state(self, refs):
        calls.append(("read", in_transaction()))
        return read(self, refs)

    def apply_changes(self, changes, *, validate_only=False):
        calls.append(("validate" if validate_only else "apply", in_transaction()))
        return apply(self, changes, validate_only=validate_only)

    monkeypatch.setattr(SandboxExecutor, "read_state", read_state)
    monkeypatch.setattr(SandboxExecutor, "apply", apply_changes)
    return calls


# Dry run -----------------------------------------------------------------------------------------


def test_a_dry_run_above_the_line_answers_202_and_the_task_reads_and_validates_outside_transactions(
    world, scenario, approver, enqueued, settings, platform_calls
):
    api = client_for(approver)
    url = f"/api/scenarios/{scenario.pk}/deploy"
    settings.DEPLOY_SYNC_MAX_ENTITIES = 4  # at the line: the request does the work
    small = api.post(url, {"mode": "dry_run", "idempotency_key": "dry-small"})
    assert small.status_code == 200 and small.json()["counts"]["validated"] == 3
    assert not tasks_named(enqueued, "scenarios.tasks.deployment_dry_run_task")
    platform_calls.clear()

    settings.DEPLOY_SYNC_MAX_ENTITIES = 3
    response = api.post(url, {"mode": "dry_run", "idempotency_key": "dry-big"})
    assert response.status_code == 202, response.json()
    body = response.json()
    deployment = Deployment.objects.get(idempotency_key="dry-big")
    assert (body["id"], body["mode"], body["status"], body["prepared_at"]) == (deployment.pk, "dry_run", "queued", None)
    assert body["progress_url"] == f"/api/deployments/{deployment.pk}" and body["results"] == []
    assert not platform_calls, "nothing is read or validated in the request"
    assert deployment.preflight.status == PreflightRun.Status.QUEUED and len(deployment.preflight.inputs) == 4
    assert tasks_named(enqueued, "scenarios.tasks.deployment_dry_run_task") == [deployment.pk]

    assert deployment_dry_run_task(deployment.pk) == f"dry run {deployment.pk}: succeeded"
    assert {kind for kind, _ in platform_calls} == {"read", "validate"}
    assert not any(in_tx for _, in_tx in platform_calls), platform_calls
    polled = api.get(body["progress_url"]).json()
    assert polled["prepared_at"] and polled["status"] == "succeeded"
    assert (polled["counts"]["validated"], polled["counts"]["skipped"], polled["counts"]["total"]) == (3, 1, 4)
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")  # nothing changed


def test_a_dry_run_task_that_runs_twice_validates_once(world, scenario, approver, enqueued, settings, platform_calls):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 3
    result = deployment_create(scenario=scenario, actor=approver, mode="dry_run", idempotency_key="dry-1")
    deployment_dry_run_task(result.response["id"])
    calls = len(platform_calls)
    assert (
        deployment_dry_run_task(result.response["id"])
        == f"dry run {result.response['id']}: already claimed or finished"
    )
    assert len(platform_calls) == calls
    assert Deployment.objects.get().results.count() == 4


def test_a_replayed_large_dry_run_returns_the_same_202_and_enqueues_once(world, scenario, approver, enqueued, settings):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 3
    api = client_for(approver)
    url = f"/api/scenarios/{scenario.pk}/deploy"
    first = api.post(url, {"mode": "dry_run"}, HTTP_IDEMPOTENCY_KEY="dry-1")
    again = api.post(url, {"mode": "dry_run"}, HTTP_IDEMPOTENCY_KEY="dry-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert Deployment.objects.count() == 1 and PreflightRun.objects.count() == 1
    assert len(tasks_named(enqueued, "scenarios.tasks.deployment_dry_run_task")) == 1


def test_a_large_dry_run_whose_preflight_fails_fails_with_the_reason(world, scenario, approver, enqueued, settings):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 3
    result = deployment_create(scenario=scenario, actor=approver, mode="dry_run", idempotency_key="dry-1")
    world.fault("auth_expired", scope="read", remaining=None)  # the worker's reads are refused
    deployment_dry_run_task(result.response["id"])
    deployment = Deployment.objects.get()
    assert deployment.status == Deployment.Status.FAILED and deployment.finished_at is not None
    assert deployment.preflight.status == PreflightRun.Status.FAILED
    assert f"Its preflight {deployment.preflight.run_id} failed: " in deployment.error_message
    assert not deployment.results.exists()


def test_the_admin_sends_a_large_dry_run_to_a_worker_and_its_page_shows_progress(
    client, world, scenario, approver, enqueued, settings
):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 3
    client.force_login(approver)
    response = client.post(f"/admin/scenarios/scenario/{scenario.pk}/dry-run/", follow=True)
    deployment = Deployment.objects.get()
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/admin/scenarios/deployment/{deployment.pk}/change/"
    assert "runs in a worker" in page
    assert "A worker is reading the live values of this dry run's entities (0 of 4 read)" in page
    assert 'http-equiv="refresh"' in page
    deployment_dry_run_task(deployment.pk)
    page = client.get(f"/admin/scenarios/deployment/{deployment.pk}/change/").content.decode()
    assert "A worker is" not in page and 'http-equiv="refresh"' not in page
    assert "3 validated" in page and "4 of 4 entities settled" in page


# Retry of the failed entities --------------------------------------------------------------------


@pytest.fixture
def partly_failed(world, scenario, approver, enqueued) -> Deployment:
    """A live deployment of which two of three changed entities failed."""
    preflight_for_scenario(scenario=scenario, actor=approver)
    world.fault("partial_failure", entity_ids=["sandbox-cmp-1", "sandbox-cmp-2"])
    deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key="first")
    run_worker()
    deployment = Deployment.objects.get()
    assert deployment.failed == 2, deployment.results.values_list("status", flat=True)
    world.account.faults.all().delete()
    enqueued.clear()
    return deployment


def test_a_retry_above_the_line_answers_202_and_the_task_reads_outside_transactions_then_deploys(
    world, partly_failed, approver, enqueued, settings, platform_calls
):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 1
    api = client_for(approver)
    response = api.post(f"/api/deployments/{partly_failed.pk}/retry-failed", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert response.status_code == 202, response.json()
    body = response.json()
    retry = Deployment.objects.get(retry_of=partly_failed)
    assert (body["id"], body["status"], body["prepared_at"], body["retry_of"]) == (
        retry.pk,
        "queued",
        None,
        partly_failed.pk,
    )
    assert body["progress_url"] == f"/api/deployments/{retry.pk}" and body["results"] == []
    assert not platform_calls and not Action.objects.filter(deployment=retry).exists()
    assert retry.preflight.status == PreflightRun.Status.QUEUED and len(retry.preflight.inputs) == 2
    assert tasks_named(enqueued, "scenarios.tasks.deployment_retry_task") == [retry.pk]

    again = api.post(f"/api/deployments/{partly_failed.pk}/retry-failed", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert again.status_code == 202 and again.json() == body and again.headers["Idempotent-Replayed"] == "true"
    assert len(tasks_named(enqueued, "scenarios.tasks.deployment_retry_task")) == 1

    assert deployment_retry_task(retry.pk) == f"deployment {retry.pk}: queued"
    assert deployment_retry_task(retry.pk) == f"deployment {retry.pk}: already claimed or prepared"
    assert platform_calls and not any(in_tx for _, in_tx in platform_calls), platform_calls
    assert Action.objects.filter(deployment=retry).count() == 2
    run_worker()
    retry.refresh_from_db()
    assert retry.status == Deployment.Status.SUCCEEDED and retry.succeeded == 2
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    assert world.platform("sandbox-cmp-2").status == "paused"


def test_a_large_retry_whose_new_preflight_has_critical_breaches_fails_with_them(
    world, partly_failed, approver, enqueued, settings
):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 1
    response = client_for(approver).post(f"/api/deployments/{partly_failed.pk}/retry-failed")
    assert response.status_code == 202
    GuardrailPolicy.objects.create(tenant=partly_failed.tenant, max_increase_pct=Decimal("20"))
    deployment_retry_task(response.json()["id"])
    retry = Deployment.objects.get(pk=response.json()["id"])
    assert retry.status == Deployment.Status.FAILED and "critical" in retry.error_message.lower()
    assert not Action.objects.filter(deployment=retry).exists()


def test_the_admin_sends_a_large_retry_to_a_worker_and_its_page_shows_progress(
    client, world, partly_failed, approver, enqueued, settings
):
    settings.DEPLOY_SYNC_MAX_ENTITIES = 1
    client.force_login(approver)
    page = client.get(f"/admin/scenarios/deployment/{partly_failed.pk}/retry/").content.decode()
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    response = client.post(f"/admin/scenarios/deployment/{partly_failed.pk}/retry/", {"token": token}, follow=True)
    retry = Deployment.objects.get(retry_of=partly_failed)
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/admin/scenarios/deployment/{retry.pk}/change/"
    assert "A worker reads their live values first" in page
    assert "A worker is reading the live values of this deployment's entities (0 of 2 read)" in page
    assert 'http-equiv="refresh"' in page
    deployment_retry_task(retry.pk)
    page = client.get(f"/admin/scenarios/deployment/{retry.pk}/change/").content.decode()
    assert "A worker is" not in page and "0 of 2 entities settled" in page
