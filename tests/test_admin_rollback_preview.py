"""The rollback confirmation reads the platform first: live value, restore value, drift."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from actions.models import Action, ActionStatus
from actions.services.rollback_preview import rollback_deadline_text, rollback_preview
from platforms.models import PlatformEntity
from platforms.sandbox.models import SandboxEntity
from scenarios.models import Deployment, PreflightEntity, PreflightRun, Scenario
from tests.engine_helpers import approved, run_worker, sandbox_world
from tests.factories import ActionFactory
from tests.test_scenario_admin import deploy_page, make_scenario, preflight, url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=0)


@pytest.fixture
def executed(world, approver) -> Action:
    """Campaign 1's daily budget changed 100.00 -> 150.00 by BudgetRadar."""
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    return action


def rollback_confirmation(client, action: Action) -> tuple[str, str]:
    response = client.get(reverse("admin:actions_action_rollback", args=[action.pk]))
    confirm = response["Location"]
    return confirm, client.get(confirm).content.decode()


def stored() -> tuple:
    """What a GET must leave as it was: the preflight rows and the mirror."""
    mirror = tuple(PlatformEntity.objects.order_by("pk").values_list("pk", "daily_budget", "synced_at"))
    return PreflightRun.objects.count(), PreflightEntity.objects.count(), mirror


# What reading a platform writes by itself: the rate limiter's tokens and the simulated
# platform's own request log; and the session, which holds the confirmation.
READING = ("django_session", "platforms_ratelimitbucket", "sandbox_sandboxrequest")


def writes(queries: CaptureQueriesContext) -> list[str]:
    """The statements that wrote anything a read of the platform does not write itself."""
    verbs = ("INSERT", "UPDATE", "DELETE")
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(verbs) and not any(f'"{table}"' in q["sql"] for table in READING)
    ]


def test_the_confirmation_shows_the_live_value_and_drift_before_anyone_confirms(client, world, approver, executed):
    # Someone changes the budget on the platform; BudgetRadar's mirror still says 150.00.
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-cmp-1").update(
        daily_budget=Decimal("300.00")
    )
    client.force_login(approver)
    _confirm, page = rollback_confirmation(client, executed)
    assert "Daily budget: live now 300.00 EUR → will restore 100.00 EUR" in page
    assert "Drift: the platform (read " in page
    assert "daily budget is 300.00 EUR but BudgetRadar set 150.00 EUR" in page
    assert Action.objects.get(pk=executed.pk).status == ActionStatus.SUCCEEDED  # GET changed nothing
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("300.00")


def test_without_drift_the_confirmation_shows_the_live_value_and_no_warning(client, world, approver, executed):
    client.force_login(approver)
    confirm, page = rollback_confirmation(client, executed)
    assert "Daily budget: live now 150.00 EUR → will restore 100.00 EUR" in page
    assert "Drift" not in page

    client.post(confirm, {"reason": "CPA spike"})
    run_worker()
    action = Action.objects.get(pk=executed.pk)
    assert action.status == ActionStatus.ROLLED_BACK
    page = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    assert "Rolled back at " in page
    assert "Until " not in page and "hours)" not in page
    assert rollback_deadline_text(action).startswith("Rolled back at ")


def test_with_no_live_read_the_preview_says_the_value_is_only_the_last_known(executed):
    preview = rollback_preview(executed, None)
    assert preview.live_read_at is None and not preview.drifted
    assert preview.change_text() == "Daily budget: last known 150.00 EUR → will restore 100.00 EUR"
    assert preview.drift_warning() == ""


def test_the_rollback_confirmation_reads_the_live_value_but_stores_nothing(client, world, approver, executed):
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-cmp-1").update(
        daily_budget=Decimal("300.00")
    )
    client.force_login(approver)
    confirm = client.get(reverse("admin:actions_action_rollback", args=[executed.pk]))["Location"]
    before = stored()
    page = client.get(confirm).content.decode()
    assert "Daily budget: live now 300.00 EUR → will restore 100.00 EUR" in page
    assert stored() == before  # no preflight row, and the mirror still says what it said

    client.post(confirm, {"reason": "CPA spike"})  # confirming runs the gate, which stores its preflight
    assert PreflightRun.objects.count() == before[0] + 1


def test_the_approve_confirmation_stores_no_preflight(client, world, approver):
    action = ActionFactory(
        entity=world.entity("sandbox-cmp-1"), params={"new_budget": "150.00", "budget_type": "daily"}
    )
    client.force_login(approver)
    confirm = client.get(reverse("admin:actions_action_approve", args=[action.pk]))["Location"]
    before = stored()
    page = client.get(confirm).content.decode()
    assert "daily budget 100.00 → 150.00 EUR" in page and "Will be approved" in page
    assert stored() == before


def test_the_deployment_rollback_confirmation_writes_nothing(client, world, tenant, approver):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    preflight(scenario, approver)
    client.force_login(approver)
    client.post(url(Scenario, "deploy", scenario.pk), deploy_page(client, scenario)[1])
    run_worker()
    deployment = Deployment.objects.get()
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-cmp-1").update(
        daily_budget=Decimal("300.00")
    )
    before = stored()
    with CaptureQueriesContext(db_connection) as queries:
        page = client.get(url(Deployment, "rollback", deployment.pk)).content.decode()
    assert "Daily budget: live now 300.00 EUR → will restore 100.00 EUR" in page
    assert "daily budget is 300.00 EUR but BudgetRadar set 150.00 EUR" in page
    assert writes(queries) == []
    assert stored() == before
