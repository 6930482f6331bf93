"""The one safety gate: value sanity, the one-entity preflight and the critical-breach rule
for single actions, at every door (recommendation, approval, execute, rollback, deploy)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionStatus, Recommendation
from actions.services.execution import action_execute_request
from actions.services.lifecycle import action_approve
from actions.services.rollback import action_rollback_request
from budgetradar.errors import ValidationFailed
from budgetradar.models import ExecutionMode
from budgetradar.roles import Role
from platforms.models import PlatformEntity
from platforms.sandbox.models import SandboxEntity, SandboxRequest
from safety.gate import CriticalBreaches, gate_autopilot
from safety.overrides import action_override_request, override_approve
from safety.values import ValueRefused, check_money
from scenarios.models import GuardrailPolicy, PreflightRun, Scenario, ScenarioItem
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import preflight_for_scenario
from tests.api_helpers import field_errors
from tests.engine_helpers import approved, run_worker, sandbox_world
from tests.factories import AdSetFactory, ConnectionFactory, EntityFactory, member, plan

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def world(tenant):
    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-adset-1-1").update(
        daily_budget=Decimal("91.00")
    )
    world.sync()
    return world


@pytest.fixture
def adset(world) -> PlatformEntity:
    return world.entity("sandbox-adset-1-1")


@pytest.fixture
def max_plus_50(tenant) -> GuardrailPolicy:
    """A critical "max +50 %" policy (max_increase_pct is critical by default)."""
    return GuardrailPolicy.objects.create(tenant=tenant, name="Max +50 %", max_increase_pct=Decimal("50"))


@pytest.fixture
def second_admin(tenant):
    return member(tenant, Role.ADMIN, "acme-admin-2")


def propose(user, entity, amount: str, **params):
    body = {"entity": entity.pk, "action_type": "adjust_budget", "params": {"new_budget": amount, **params}}
    return client_for(user).post("/api/recommendations/", body, format="json")


def grant(action: Action, requester, approver, reason: str) -> None:
    """An override of the action's latest preflight, requested and approved by two people."""
    override = action_override_request(action=action, actor=requester, reason=reason)
    override_approve(override=override, actor=approver)


def reads(world) -> int:
    return SandboxRequest.objects.filter(account=world.account, method="read").count()


# The critical-breach rule on a single action -------------------------------------------------


def test_a_tenfold_raise_runs_only_after_a_second_person_approves_an_override(
    world, adset, max_plus_50, operator, approver, tenant_admin, second_admin
):
    created = propose(operator, adset, "910.00")
    assert created.status_code == 201, created.json()
    recommendation, action_id = created.json()["id"], created.json()["action"]["id"]

    refused = client_for(approver).post(f"/api/actions/approve/{recommendation}")
    assert refused.status_code == 409
    assert refused.json()["code"] == "critical_breaches"
    assert "rises 900.00% (from 91.00 EUR to 910.00 EUR), above the 50.00% allowed" in refused.json()["message"]
    [breach] = refused.json()["details"]["breaches"]
    assert (breach["code"], breach["severity"], breach["field"]) == ("max_increase_pct", "critical", "daily_budget")

    shown = client_for(approver).get(f"/api/actions/{action_id}").json()
    assert shown["status"] == "pending_approval"
    preflight = shown["preflight"]
    assert preflight["before"]["daily_budget"] == "91.00" and preflight["after"]["daily_budget"] == "910.00"
    [change] = preflight["changes"]
    assert (change["field"], change["delta"], change["percent_delta"]) == ("daily_budget", "819.00", "900.00")
    assert preflight["forecast_status"] in ("fitted", "no_data")
    assert preflight["has_critical"] is True and preflight["overrides"] == []
    assert client_for(approver).post(f"/api/actions/{action_id}/execute").status_code == 409  # not approved
    run_worker()
    assert world.platform("sandbox-adset-1-1").daily_budget == Decimal("91.00")

    override = client_for(tenant_admin).post(f"/api/actions/{action_id}/override", {"reason": "Launch"}, format="json")
    assert override.status_code == 201, override.json()
    assert override.json()["preflight"] == preflight["run_id"]
    own = client_for(tenant_admin).post(f"/api/overrides/{override.json()['id']}/approve")
    assert own.status_code == 403 and own.json()["message"].startswith("You requested this override; another person")
    still = client_for(approver).post(f"/api/actions/approve/{recommendation}")
    assert still.status_code == 409 and "not approved yet" in still.json()["message"]
    assert client_for(second_admin).post(f"/api/overrides/{override.json()['id']}/approve").status_code == 200

    approval = client_for(approver).post(f"/api/actions/approve/{recommendation}")
    assert approval.status_code == 200, approval.json()
    assert approval.json()["status"] == "approved"
    assert approval.json()["preflight"]["overrides"][0]["approved_by"] == "acme-admin-2"
    assert approval.json()["baseline_state"]["daily_budget"] == "91.00"
    log = Action.objects.get(pk=action_id).logs.get(event="approved").message
    assert "overridden by override" in log and "Launch" in log
    run_worker()
    assert world.platform("sandbox-adset-1-1").daily_budget == Decimal("910.00")
    assert Action.objects.get(pk=action_id).status == ActionStatus.SUCCEEDED


def test_an_override_covers_the_change_it_was_shown_and_not_its_rollback(
    world, adset, tenant, approver, tenant_admin, second_admin
):
    GuardrailPolicy.objects.create(
        tenant=tenant,
        name="Both ways",
        max_increase_pct=Decimal("50"),
        max_decrease_pct=Decimal("50"),
        severities={"max_decrease_pct": "critical"},
    )
    action = Action.objects.get(recommendation__pk=propose(approver, adset, "910.00").json()["id"])
    with pytest.raises(CriticalBreaches):
        action_approve(action=action, actor=approver)
    grant(action, tenant_admin, second_admin, "Launch")
    action_approve(action=Action.objects.get(pk=action.pk), actor=approver)
    run_worker()
    action = Action.objects.get(pk=action.pk)
    assert action.status == ActionStatus.SUCCEEDED
    with pytest.raises(CriticalBreaches, match="no approved override was given.*falls 90.00%"):
        action_rollback_request(action=action, actor=approver, reason="too much")
    grant(action, tenant_admin, second_admin, "Roll back the launch")
    action_rollback_request(action=Action.objects.get(pk=action.pk), actor=approver, reason="too much")
    run_worker()
    assert world.platform("sandbox-adset-1-1").daily_budget == Decimal("91.00")


def test_execute_now_judges_the_change_against_the_policy_as_it_is_now(world, adset, approver, tenant, tenant_admin):
    tenant.execution_mode = ExecutionMode.MANUAL
    tenant.save()
    action = approved(adset, approver, new_budget="300.00")
    assert action.status == ActionStatus.APPROVED and action.next_attempt_at is None
    GuardrailPolicy.objects.create(tenant=tenant, name="Max +50 %", max_increase_pct=Decimal("50"))
    with pytest.raises(CriticalBreaches, match="rises 229.67%"):
        action_execute_request(action=Action.objects.get(pk=action.pk), actor=approver)
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED
    assert world.platform("sandbox-adset-1-1").daily_budget == Decimal("91.00")
    # the refusal stored the preflight it judged: it is on the action for an override
    assert PreflightRun.objects.filter(action=action, has_critical=True).count() == 1


def test_a_rollback_passes_the_gate_too(world, approver, tenant):
    campaign = world.entity("sandbox-cmp-1")
    action = approved(campaign, approver, new_budget="140.00")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    GuardrailPolicy.objects.create(
        tenant=tenant, name="Careful", max_decrease_pct=Decimal("20"), severities={"max_decrease_pct": "critical"}
    )
    with pytest.raises(CriticalBreaches, match="falls 28.57%"):
        action_rollback_request(action=action, actor=approver, reason="undo")
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    run = PreflightRun.objects.filter(action=action).latest("created_at")
    assert run.inputs[0]["targets"] == {"daily_budget": "100.00"}


def test_an_unreadable_platform_refuses_the_approval_and_nothing_is_approved(world, adset, approver):
    action = Action.objects.get(recommendation__pk=propose(approver, adset, "100.00").json()["id"])
    world.fault("auth_expired", scope="read", remaining=10)
    response = client_for(approver).post(f"/api/actions/approve/{action.recommendation_id}")
    assert response.status_code == 502
    assert "guardrails could not be checked" in response.json()["message"]
    assert Action.objects.get(pk=action.pk).status == ActionStatus.PENDING_APPROVAL


def test_a_fresh_preflight_is_reused_and_becomes_the_baseline(world, adset, approver):
    action = Action.objects.get(recommendation__pk=propose(approver, adset, "100.00").json()["id"])
    api = client_for(approver)
    preflight = api.post(f"/api/actions/{action.pk}/preflight").json()["preflight"]
    before = reads(world)
    approval = api.post(f"/api/actions/approve/{action.recommendation_id}").json()
    assert reads(world) == before, "the approval re-read the platform instead of reusing the fresh preflight"
    assert approval["preflight"]["run_id"] == preflight["run_id"]
    assert approval["baseline_state"]["daily_budget"] == "91.00"


def test_a_preflight_read_refreshes_the_mirror(world, adset, approver):
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-adset-1-1").update(
        daily_budget=Decimal("77.00"), status="paused"
    )
    synced = PlatformEntity.objects.get(pk=adset.pk).synced_at
    scenario = Scenario.objects.create(tenant=adset.tenant, name="Plan")
    ScenarioItem.objects.create(scenario=scenario, entity=adset, daily_budget=Decimal("80.00"))
    preflight_for_scenario(scenario=scenario, actor=approver)
    mirror = PlatformEntity.objects.get(pk=adset.pk)
    assert (mirror.daily_budget, mirror.status) == (Decimal("77.00"), "paused")
    assert mirror.synced_at > synced


def test_two_changes_in_a_row_on_one_entity_both_succeed(world, approver):
    campaign = world.entity("sandbox-cmp-1")
    first = approved(campaign, approver, new_budget="120.00")
    run_worker()
    second = approved(world.entity("sandbox-cmp-1"), approver, new_budget="130.00")
    assert second.baseline_state["daily_budget"] == "120.00"  # what BudgetRadar set, read back by the gate
    run_worker()
    assert [Action.objects.get(pk=a.pk).status for a in (first, second)] == [ActionStatus.SUCCEEDED] * 2
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("130.00")


# Value sanity ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("amount", ["1e400", "99999999999999999999.99", "2000000.00"])
def test_absurd_amounts_are_refused_with_the_field_named_and_nothing_is_created(campaign, approver, amount):
    response = propose(approver, campaign, amount)
    assert response.status_code == 400
    body = response.json()
    assert list(field_errors(body)) == ["params.new_budget"]
    assert "above the ceiling of 1000000.00 EUR" in field_errors(body)["params.new_budget"]
    assert campaign.name in field_errors(body)["params.new_budget"]
    assert not Recommendation.objects.exists()


@pytest.mark.django_db
def test_the_ceiling_and_floor_are_per_currency_and_configurable(tenant, approver, settings):
    yen = EntityFactory(connection=ConnectionFactory(tenant=tenant, currency="JPY"), daily_budget=Decimal("5000"))
    assert propose(approver, yen, "90000000").status_code == 201  # 90 million yen: within the yen's ceiling
    assert "ceiling of 100000000 JPY" in field_errors(propose(approver, yen, "150000000"))["params.new_budget"]
    settings.MONEY_CEILINGS = {"JPY": "1000000"}
    settings.MONEY_FLOORS = {"JPY": "100"}
    assert "ceiling of 1000000 JPY" in field_errors(propose(approver, yen, "2000000"))["params.new_budget"]
    assert "below the floor of 100 JPY" in field_errors(propose(approver, yen, "50"))["params.new_budget"]


@pytest.mark.django_db
def test_a_bid_is_checked_and_named_by_its_param(campaign, approver):
    adset = AdSetFactory(connection=campaign.connection, parent=campaign)
    body = {"entity": adset.pk, "action_type": "adjust_bid", "params": {"new_bid": "5e9"}}
    response = client_for(approver).post("/api/recommendations/", body, format="json")
    assert response.status_code == 400 and list(field_errors(response)) == ["params.new_bid"]


def test_a_live_deploy_refuses_an_absurd_item_naming_it(world, approver, operator):
    scenario = Scenario.objects.create(tenant=world.connection.tenant, name="Typo", created_by=operator)
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("120"))
    ScenarioItem.objects.create(
        scenario=scenario, entity=world.entity("sandbox-adset-1-1"), daily_budget=Decimal("50000000.00")
    )
    preflight_for_scenario(scenario=scenario, actor=approver)
    with pytest.raises(ValidationFailed) as refused:
        deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key="k")
    assert list(refused.value.details) == ["items[1].daily_budget"]
    assert "Ad set 1.1" in refused.value.message and not Action.objects.exists()


# Autopilot's door -------------------------------------------------------------------------------


def test_autopilot_never_overrides_a_critical_breach(world, tenant, max_plus_50):
    tenant.plan = plan("enterprise")
    tenant.save()
    scenario = Scenario.objects.create(tenant=tenant, name="Autopilot plan")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("120"))
    run = preflight_for_scenario(scenario=scenario, actor=None)
    gate_autopilot(scenario=scenario, preflight=run)  # +20 %: through
    ScenarioItem.objects.filter(scenario=scenario).update(daily_budget=Decimal("500"))
    run = preflight_for_scenario(scenario=scenario, actor=None)
    with pytest.raises(CriticalBreaches, match="falls back to assist"):
        gate_autopilot(scenario=Scenario.objects.get(pk=scenario.pk), preflight=run)


@pytest.mark.parametrize(
    ("platform", "currency", "billable", "amount", "grain"),
    [
        ("meta", "HUF", None, "5000.50", "1.00 HUF"),  # Meta's offset for HUF is 1: whole forints
        ("google_ads", "USD", 1_000_000, "50.50", "1.00 USD"),  # the account's billable unit
        ("sandbox", "EUR", None, "50.505", "0.01 EUR"),  # ISO 4217 minor units
    ],
)
def test_value_sanity_uses_the_platforms_own_grain(platform, currency, billable, amount, grain):
    """The gate judges every door's amounts (rollbacks and scenario items too) by the
    platform's own grain, not by the ISO exponent alone."""
    with pytest.raises(ValueRefused, match=grain):
        check_money(
            amount,
            field="daily_budget",
            currency=currency,
            platform=platform,
            subject="X",
            billable_unit_micros=billable,
        )
    assert check_money(
        "5000", field="daily_budget", currency=currency, platform=platform, subject="X", billable_unit_micros=billable
    ) == Decimal("5000")
