"""Deploying scenarios: dry run changes nothing; live runs once, per-entity results, idempotent."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.circuit import CircuitOpen
from actions.services.rollback import action_rollback_request
from budgetradar.errors import Conflict, InvalidState, NotEntitled, PermissionDenied
from platforms.models import CircuitState, PlatformConnection
from platforms.sandbox.models import SandboxEntity, SandboxRequest
from safety.gate import CriticalBreaches
from safety.overrides import override_approve, override_request
from scenarios.models import Deployment, GuardrailPolicy, PreflightRun, Scenario, ScenarioItem
from scenarios.services.deploy import (
    deployment_create,
    deployment_retry_failed,
    deployment_rollback,
    deployment_serialize,
)
from scenarios.services.preflight import preflight_for_scenario
from tests.engine_helpers import run_worker, sandbox_world
from tests.factories import plan

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=3, ad_sets_per_campaign=1)


@pytest.fixture
def scenario(world, operator):
    scenario = Scenario.objects.create(tenant=world.connection.tenant, name="Q4 shift", created_by=operator)
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("150.00"))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-2"), status="paused")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-adset-3-1"), bid=Decimal("2.00"))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-3"), daily_budget=Decimal("100.00"))
    return scenario


def preflighted(scenario, actor):
    preflight_for_scenario(scenario=scenario, actor=actor)
    return Scenario.objects.get(pk=scenario.pk)


def live(scenario, actor, key="deploy-1", **kwargs):
    return deployment_create(scenario=scenario, actor=actor, mode="live", idempotency_key=key, **kwargs)


def by_entity(response) -> dict[str, dict]:
    return {r["entity"]["external_id"]: r for r in response["results"]}


def platform_state(world) -> list[tuple]:
    return list(
        SandboxEntity.objects.filter(account=world.account)
        .order_by("external_id")
        .values_list("external_id", "status", "daily_budget", "bid")
    )


# Dry run ----------------------------------------------------------------------------


def test_dry_run_validates_on_the_platform_and_changes_nothing(world, scenario, operator):
    before = platform_state(world)
    result = deployment_create(scenario=scenario, actor=operator, mode="dry_run", idempotency_key="dry-1")
    assert result.status_code == 200
    results = by_entity(result.response)
    assert {k: r["status"] for k, r in results.items()} == {
        "sandbox-cmp-1": "validated",
        "sandbox-cmp-2": "validated",
        "sandbox-adset-3-1": "validated",
        "sandbox-cmp-3": "skipped",
    }
    assert platform_state(world) == before
    applies = SandboxRequest.objects.filter(account=world.account, method="apply")
    assert applies.exists() and not applies.filter(validate_only=False).exists()
    assert not Action.objects.exists()


def test_dry_run_gives_the_same_answer_each_time(world, scenario, operator):
    first = deployment_create(scenario=scenario, actor=operator, mode="dry_run", idempotency_key="dry-1")
    replay = deployment_create(scenario=scenario, actor=operator, mode="dry_run", idempotency_key="dry-1")
    again = deployment_create(scenario=scenario, actor=operator, mode="dry_run", idempotency_key="dry-2")
    assert replay.replayed and replay.response == first.response
    assert [(r["entity"]["external_id"], r["status"]) for r in again.response["results"]] == [
        (r["entity"]["external_id"], r["status"]) for r in first.response["results"]
    ]


def test_dry_run_reports_what_the_platform_would_refuse(world, scenario, operator):
    world.fault("partial_failure", entity_ids=["sandbox-cmp-1"])
    result = deployment_create(scenario=scenario, actor=operator, mode="dry_run", idempotency_key="dry-1")
    failed = by_entity(result.response)["sandbox-cmp-1"]
    assert failed["status"] == "failed" and failed["error_code"] == "invalid_value" and failed["hint"]
    assert result.response["status"] == "partially_succeeded"


# Live -------------------------------------------------------------------------------


def test_live_deploy_runs_one_action_per_changed_entity_and_reports_each(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    result = live(scenario, approver)
    assert result.status_code == 202 and result.response["status"] == "queued"
    assert Action.objects.count() == 3  # the noop entity gets no action
    run_worker()
    deployment = Deployment.objects.get()
    assert deployment.status == Deployment.Status.SUCCEEDED
    statuses = {r.entity.external_id: r.status for r in deployment.results.select_related("entity")}
    assert statuses == {
        "sandbox-cmp-1": "succeeded",
        "sandbox-cmp-2": "succeeded",
        "sandbox-adset-3-1": "succeeded",
        "sandbox-cmp-3": "skipped",
    }
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    assert world.platform("sandbox-cmp-2").status == "paused"
    assert world.platform("sandbox-adset-3-1").bid == Decimal("2.00")
    assert Scenario.objects.get(pk=scenario.pk).status == Scenario.Status.DEPLOYED


def test_live_deploy_with_a_partial_failure_gives_correct_per_entity_results(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    world.fault("partial_failure", entity_ids=["sandbox-cmp-2"])
    live(scenario, approver)
    run_worker()
    deployment = Deployment.objects.get()
    failed = deployment.results.get(entity__external_id="sandbox-cmp-2")
    assert (failed.status, failed.error_code, failed.retryable) == ("failed", "invalid_value", False)
    assert failed.hint and failed.before["status"] == "active"
    assert deployment.status == Deployment.Status.PARTIALLY_SUCCEEDED
    assert (deployment.succeeded, deployment.failed, deployment.skipped) == (2, 1, 1)


def test_an_entity_changed_on_the_platform_after_preflight_is_stale_and_not_applied(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(daily_budget=Decimal("90.00"))
    live(scenario, approver)
    run_worker()
    stale = Deployment.objects.get().results.get(entity__external_id="sandbox-cmp-1")
    assert stale.status == "stale" and "changed on the platform" in stale.error_message
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("90.00")


def test_replaying_a_key_returns_the_same_deployment_and_reusing_it_differently_is_refused(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    first = live(scenario, approver)
    replay = live(scenario, approver)
    assert replay.replayed and replay.response["id"] == first.response["id"]
    with pytest.raises(Conflict, match="already used for a different request"):
        deployment_create(scenario=scenario, actor=approver, mode="dry_run", idempotency_key="deploy-1")
    assert Deployment.objects.count() == 1


def test_live_deploy_needs_a_fresh_preflight(world, scenario, approver):
    with pytest.raises(InvalidState, match="no preflight yet"):
        live(scenario, approver)
    scenario = preflighted(scenario, approver)
    two_hours_ago = timezone.now() - timedelta(hours=2)
    PreflightRun.objects.update(created_at=two_hours_ago, reads_finished_at=two_hours_ago)
    with pytest.raises(InvalidState, match=r"older than 30 minutes \(sandbox\), counted from when its platform reads"):
        live(scenario, approver)
    scenario = preflighted(scenario, approver)
    ScenarioItem.objects.filter(scenario=scenario).first().save()
    Scenario.objects.filter(pk=scenario.pk).update(updated_at=timezone.now() + timedelta(seconds=1))
    with pytest.raises(InvalidState, match="changed after its latest preflight"):
        live(Scenario.objects.get(pk=scenario.pk), approver)


def test_live_deploy_is_refused_without_entitlement_or_role(world, scenario, approver, operator, tenant):
    scenario = preflighted(scenario, approver)
    with pytest.raises(PermissionDenied):
        live(scenario, operator)
    tenant.plan = plan("growth")
    tenant.save()
    with pytest.raises(NotEntitled, match="does not include live deploy"):
        live(Scenario.objects.get(pk=scenario.pk), approver)


def test_live_deploy_is_refused_while_a_circuit_is_open(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    PlatformConnection.objects.filter(pk=world.connection.pk).update(
        circuit_state=CircuitState.OPEN, circuit_opened_at=timezone.now(), circuit_reason="3 auth_expired"
    )
    with pytest.raises(CircuitOpen, match="3 auth_expired"):
        live(scenario, approver)
    assert not Deployment.objects.exists()


def test_critical_breaches_need_an_override_approved_by_a_second_person(
    world, scenario, approver, tenant_admin, tenant
):
    from tests.factories import member

    second_admin = member(tenant, "admin", "acme-admin-2")
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("20"))
    scenario = preflighted(scenario, approver)
    preflight = PreflightRun.objects.latest("created_at")
    assert preflight.has_critical
    with pytest.raises(CriticalBreaches) as refused:
        live(scenario, approver)
    assert refused.value.details["breaches"][0]["code"] == "max_increase_pct"
    override = override_request(preflight=preflight, actor=tenant_admin, reason="Black Friday push, agreed with CFO")
    with pytest.raises(PermissionDenied, match="^You requested this override; another person"):
        override_approve(override=override, actor=tenant_admin)
    with pytest.raises(CriticalBreaches, match="not approved yet"):
        live(scenario, approver, override_id=override.pk)
    override_approve(override=override, actor=second_admin)
    assert live(scenario, approver, override_id=override.pk).status_code == 202
    assert Deployment.objects.get().override == override


def test_retry_failed_entities_deploys_only_those_with_a_new_key(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    world.fault("partial_failure", entity_ids=["sandbox-cmp-2"])
    live(scenario, approver)
    run_worker()
    original = Deployment.objects.get()
    retry = deployment_retry_failed(deployment=original, actor=approver)
    run_worker()
    retry.refresh_from_db()
    assert retry.retry_of == original and retry.idempotency_key != original.idempotency_key
    assert [r.entity.external_id for r in retry.results.select_related("entity")] == ["sandbox-cmp-2"]
    assert retry.status == Deployment.Status.SUCCEEDED
    assert world.platform("sandbox-cmp-2").status == "paused"


def test_rolling_back_a_deployment_restores_every_succeeded_entity(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    live(scenario, approver)
    run_worker()
    deployment = Deployment.objects.get()
    deployment_rollback(deployment=deployment, actor=approver, reason="conversions dropped")
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert world.platform("sandbox-cmp-2").status == "active"
    assert world.platform("sandbox-adset-3-1").bid == Decimal("1.50")
    statuses = set(deployment.results.exclude(status="skipped").values_list("status", flat=True))
    assert statuses == {"rolled_back"}
    assert set(Action.objects.values_list("status", flat=True)) == {ActionStatus.ROLLED_BACK}
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.ROLLED_BACK
    assert (deployment.succeeded, deployment.rolled_back, deployment.skipped, deployment.total) == (0, 3, 1, 4)


def test_rolling_back_one_entity_of_a_deployment_leaves_it_partially_rolled_back(world, scenario, approver):
    scenario = preflighted(scenario, approver)
    live(scenario, approver)
    run_worker()
    deployment = Deployment.objects.get()
    action = deployment.actions.get(entity__external_id="sandbox-cmp-1")
    action_rollback_request(action=action, actor=approver, reason="only this one")
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert world.platform("sandbox-cmp-2").status == "paused"
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.PARTIALLY_ROLLED_BACK
    assert (deployment.succeeded, deployment.rolled_back, deployment.skipped) == (2, 1, 1)
    assert deployment_serialize(deployment, include_results=False)["counts"] == {
        "total": 4,
        "succeeded": 2,
        "failed": 0,
        "skipped": 1,
        "stale": 0,
        "validated": 0,
        "blocked": 0,
        "pending": 0,
        "rolled_back": 1,
    }


def test_a_deployment_whose_every_applied_change_was_rolled_back_is_rolled_back_despite_failures(
    world, scenario, approver
):
    scenario = preflighted(scenario, approver)
    world.fault("partial_failure", entity_ids=["sandbox-cmp-2"])
    live(scenario, approver)
    run_worker()
    deployment = Deployment.objects.get()
    deployment_rollback(deployment=deployment, actor=approver, reason="CPA up")
    run_worker()
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.ROLLED_BACK
    assert (deployment.succeeded, deployment.rolled_back, deployment.failed, deployment.skipped) == (0, 2, 1, 1)
