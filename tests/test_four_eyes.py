"""Four-eyes as one rule across doors: whoever created or last changed a recommendation or
a scenario cannot alone approve it, deploy it live, retry it or approve an override of it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actions.models import Action, ActionStatus
from actions.services.lifecycle import action_approve
from actions.services.recommendations import RecommendationInput, recommendations_create
from budgetradar.errors import PermissionDenied
from budgetradar.roles import Role
from safety.gate import CriticalBreaches
from safety.overrides import override_approve, override_request
from scenarios.models import Deployment, GuardrailPolicy, Scenario
from scenarios.services.deploy import deployment_create, deployment_retry_failed
from scenarios.services.imports import parse_item_list, scenario_create, scenario_update
from scenarios.services.preflight import preflight_for_scenario
from tests.engine_helpers import run_worker, sandbox_world
from tests.factories import member

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def four_eyes(tenant):
    tenant.four_eyes_required = True
    tenant.save()
    return tenant


@pytest.fixture
def world(four_eyes):
    return sandbox_world(four_eyes, campaigns=2, ad_sets_per_campaign=1)


@pytest.fixture
def second_admin(tenant):
    return member(tenant, Role.ADMIN, "acme-admin-2")


def plan_of(world, actor, **targets) -> Scenario:
    items = [{"entity": world.entity(external_id).pk, **values} for external_id, values in targets.items()]
    tenant = world.connection.tenant
    return scenario_create(tenant=tenant, actor=actor, name="Plan", items=parse_item_list(tenant=tenant, items=items))


def live(scenario, actor, key="k-1", **kwargs):
    preflight_for_scenario(scenario=scenario, actor=actor)
    return deployment_create(
        scenario=Scenario.objects.get(pk=scenario.pk), actor=actor, mode="live", idempotency_key=key, **kwargs
    )


def test_an_approver_cannot_build_a_scenario_and_deploy_it_live_alone(world, approver, second_approver):
    scenario = plan_of(world, approver, **{"sandbox-cmp-1": {"daily_budget": "110.00"}})
    with pytest.raises(PermissionDenied, match="Four-eyes.*you created or last changed scenario Plan") as refused:
        live(scenario, approver)
    assert refused.value.code == "four_eyes"
    assert not Deployment.objects.exists()
    assert live(scenario, second_approver, key="k-2").status_code == 202


def test_whoever_last_changed_the_plan_cannot_deploy_it_either(world, operator, approver, second_approver):
    scenario = plan_of(world, operator, **{"sandbox-cmp-1": {"daily_budget": "110.00"}})
    items = parse_item_list(
        tenant=scenario.tenant, items=[{"entity": world.entity("sandbox-cmp-1").pk, "status": "paused"}]
    )
    scenario_update(scenario=scenario, actor=approver, items=items)
    assert Scenario.objects.get(pk=scenario.pk).changed_by == approver
    with pytest.raises(PermissionDenied, match="Four-eyes"):
        live(scenario, approver)
    assert live(scenario, second_approver, key="k-2").status_code == 202


def test_deploying_is_not_a_change_of_the_plan(world, operator, approver, second_approver):
    """The deployer of a plan may retry its failed entities: deploying did not make them an author."""
    scenario = plan_of(world, operator, **{"sandbox-cmp-1": {"daily_budget": "110.00"}})
    world.fault("invalid_value", remaining=1)
    live(scenario, approver)
    run_worker()
    deployment = Deployment.objects.get()
    assert deployment.failed == 1
    assert Scenario.objects.get(pk=scenario.pk).changed_by == operator
    retry = deployment_retry_failed(deployment=deployment, actor=approver)
    assert retry.retry_of == deployment


def test_the_author_cannot_retry_the_failed_entities_alone(world, approver, second_approver):
    scenario = plan_of(world, approver, **{"sandbox-cmp-1": {"daily_budget": "110.00"}})
    world.fault("invalid_value", remaining=1)
    live(scenario, second_approver)
    run_worker()
    deployment = Deployment.objects.get()
    with pytest.raises(PermissionDenied, match="Four-eyes"):
        deployment_retry_failed(deployment=deployment, actor=approver)
    assert deployment_retry_failed(deployment=deployment, actor=second_approver).retry_of == deployment


def test_the_author_of_a_scenario_cannot_approve_an_override_of_it(world, tenant, tenant_admin, second_admin):
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("10"))
    scenario = plan_of(world, second_admin, **{"sandbox-cmp-1": {"daily_budget": "150.00"}})
    preflight = preflight_for_scenario(scenario=scenario, actor=tenant_admin)
    override = override_request(preflight=preflight, actor=tenant_admin, reason="Launch")
    with pytest.raises(PermissionDenied, match="approve an override of its guardrail breaches"):
        override_approve(override=override, actor=second_admin)
    assert not override.approved
    with pytest.raises(CriticalBreaches):
        deployment_create(scenario=scenario, actor=tenant_admin, mode="live", idempotency_key="k")


def test_the_proposer_of_an_action_cannot_approve_an_override_of_it(world, tenant, tenant_admin, second_admin):
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("10"))
    entity = world.entity("sandbox-cmp-1")
    [recommendation] = recommendations_create(
        tenant=tenant,
        actor=second_admin,
        items=[RecommendationInput(entity_id=entity.pk, action_type="adjust_budget", params={"new_budget": "150.00"})],
    )
    action = recommendation.actions.get()
    with pytest.raises(CriticalBreaches):
        action_approve(action=action, actor=tenant_admin)
    override = override_request(preflight=action.preflights.get(), actor=tenant_admin, reason="Launch")
    with pytest.raises(PermissionDenied, match="you created or last changed action"):
        override_approve(override=override, actor=second_admin)


def test_the_author_of_a_scenario_cannot_approve_its_failed_action_again(world, approver, second_approver):
    scenario = plan_of(world, approver, **{"sandbox-cmp-1": {"daily_budget": "110.00"}})
    world.fault("invalid_value", remaining=1)
    live(scenario, second_approver)
    run_worker()
    action = Action.objects.get(status=ActionStatus.FAILED)
    with pytest.raises(PermissionDenied, match="Four-eyes"):
        action_approve(action=action, actor=approver)
    action_approve(action=Action.objects.get(pk=action.pk), actor=second_approver)
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED


def test_without_four_eyes_the_author_may_deploy(world, approver):
    tenant = world.connection.tenant
    tenant.four_eyes_required = False
    tenant.save()
    scenario = plan_of(world, approver, **{"sandbox-cmp-1": {"daily_budget": "110.00"}})
    assert live(scenario, approver).status_code == 202
