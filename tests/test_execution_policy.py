"""The execution policy: approved changes run on approval, in the next change window, or
only when someone presses Execute — and every page and the API say which, and when."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionStatus
from actions.services.execution import action_execute_request
from actions.services.lifecycle import action_approve
from budgetradar.models import ExecutionMode
from safety.gate import CriticalBreaches
from safety.schedule import next_change_window
from scenarios.models import Deployment, GuardrailPolicy, Scenario, ScenarioItem
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import preflight_for_scenario
from tests.engine_helpers import approved, run_worker, sandbox_world
from tests.factories import ActionFactory

pytestmark = pytest.mark.django_db(transaction=True)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=2, ad_sets_per_campaign=1)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def mode(obj, value: str) -> None:
    obj.execution_mode = value
    obj.save()


def window_in_two_hours(tenant) -> tuple[GuardrailPolicy, datetime]:
    """A one-hour change window that opens two hours from now (Europe/Berlin), and its start."""
    start = (timezone.now().astimezone(BERLIN) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    policy = GuardrailPolicy.objects.create(
        tenant=tenant,
        name="Afternoon",
        change_window_start=start.time(),
        change_window_end=(start + timedelta(hours=1)).time(),
    )
    return policy, start


def pending(world, external_id: str = "sandbox-cmp-1") -> Action:
    return ActionFactory(entity=world.entity(external_id), params={"new_budget": "110.00", "budget_type": "daily"})


# On approval (today's behaviour) ----------------------------------------------------------------


def test_on_approval_an_action_is_due_at_once_and_the_api_says_so(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="110.00")
    assert action.next_attempt_at <= action.approved_at and action.wait_reason == ""
    execution = client_for(approver).get(f"/api/actions/{action.pk}").json()["execution"]
    assert execution["mode"] == "on_approval" and "tenant Acme" in execution["source"]
    assert execution["summary"] == "Due: the dispatcher starts it within a minute."
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED


# Manual execute only ----------------------------------------------------------------------------


def test_manual_execute_only_waits_for_someone_to_press_execute(world, approver, tenant):
    mode(tenant, ExecutionMode.MANUAL)
    action = pending(world)
    body = client_for(approver).get(f"/api/actions/{action.pk}").json()["execution"]
    assert body["summary"].startswith("When approved: waits for someone to press Execute")
    action_approve(action=action, actor=approver)
    action.refresh_from_db()
    assert action.next_attempt_at is None and "manual execute only" in action.wait_reason
    summary = client_for(approver).get(f"/api/actions/{action.pk}").json()["execution"]["summary"]
    assert summary.startswith("Waits for someone to press Execute.")
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED, "it ran by itself"
    action_execute_request(action=Action.objects.get(pk=action.pk), actor=approver)
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("110.00")


def test_a_connection_overrides_the_tenant(world, approver, tenant):
    mode(tenant, ExecutionMode.MANUAL)
    mode(world.connection, ExecutionMode.ON_APPROVAL)
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="110.00")
    assert action.next_attempt_at is not None
    execution = client_for(approver).get(f"/api/actions/{action.pk}").json()["execution"]
    assert execution["mode"] == "on_approval" and execution["source"] == "execution policy of connection Sandbox"


# The next change window ---------------------------------------------------------------------------


def test_in_the_next_change_window_an_approval_waits_for_the_window(world, approver, tenant):
    mode(tenant, ExecutionMode.CHANGE_WINDOW)
    _policy, start = window_in_two_hours(tenant)
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="110.00")
    assert action.next_attempt_at == start.astimezone(UTC)
    summary = client_for(approver).get(f"/api/actions/{action.pk}").json()["execution"]["summary"]
    assert summary.startswith(f"Will run at {start:%H:%M} Europe/Berlin")
    assert "the next change window" in summary
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED
    Action.objects.filter(pk=action.pk).update(next_attempt_at=timezone.now())  # the window opens
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED


def test_outside_the_window_on_approval_refuses_but_the_window_mode_schedules(world, approver, tenant):
    window_in_two_hours(tenant)
    with pytest.raises(CriticalBreaches, match="changes are allowed"):
        action_approve(action=pending(world), actor=approver)
    mode(tenant, ExecutionMode.CHANGE_WINDOW)
    action = pending(world, "sandbox-cmp-2")
    action_approve(action=action, actor=approver)
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED
    assert "judged when it runs" in action.logs.get(event="approved").message
    with pytest.raises(CriticalBreaches, match="changes are allowed"):  # Execute now is judged now
        action_execute_request(action=Action.objects.get(pk=action.pk), actor=approver)


def test_the_approval_confirmation_page_says_when_each_action_runs(client, world, approver, tenant):
    mode(tenant, ExecutionMode.CHANGE_WINDOW)
    _policy, start = window_in_two_hours(tenant)
    action = pending(world)
    client.force_login(approver)
    response = client.get(reverse("admin:actions_action_approve", args=[action.pk]))
    page = client.get(response["Location"]).content.decode()
    assert f"When approved: will run at {start:%H:%M} Europe/Berlin" in page
    assert "Preflight pf-" in page and "daily budget 100.00 → 110.00 EUR (+10.00%)" in page
    assert "execution policy: execute in the next change window" in page
    change = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    assert "When approved: will run at" in change and 'id="safety-gate"' in change


# Deployments -------------------------------------------------------------------------------------


def test_a_live_deploy_schedules_its_actions_by_each_connections_policy(client, world, approver, operator):
    mode(world.connection, ExecutionMode.MANUAL)
    scenario = Scenario.objects.create(tenant=world.connection.tenant, name="Plan", created_by=operator)
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("120"))
    preflight_for_scenario(scenario=scenario, actor=approver)
    client.force_login(approver)
    page = client.get(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk])).content.decode()
    assert "Waits for someone to press Execute (execution policy of connection Sandbox: manual execute only)" in page
    deployment_create(scenario=Scenario.objects.get(pk=scenario.pk), actor=approver, mode="live", idempotency_key="k")
    action = Action.objects.get()
    assert action.next_attempt_at is None and "manual execute only" in action.wait_reason
    run_worker()
    assert Action.objects.get().status == ActionStatus.APPROVED
    assert Deployment.objects.get().status == Deployment.Status.QUEUED


# Finding the next window ----------------------------------------------------------------------------


def policy(**fields) -> GuardrailPolicy:
    return GuardrailPolicy(**fields)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("fields", "after", "expected"),
    [
        # inside the window: now
        ({"change_window_start": time(9), "change_window_end": time(17)}, "2026-12-01 10:00", "2026-12-01 10:00"),
        # before and after it: its next start
        ({"change_window_start": time(9), "change_window_end": time(17)}, "2026-12-01 07:00", "2026-12-01 09:00"),
        ({"change_window_start": time(9), "change_window_end": time(17)}, "2026-12-01 17:00", "2026-12-02 09:00"),
        # weekdays only (2026-12-04 is a Friday): Monday
        (
            {"change_window_days": [0, 1, 2, 3, 4], "change_window_start": time(9), "change_window_end": time(17)},
            "2026-12-04 18:00",
            "2026-12-07 09:00",
        ),
        # past midnight: 22:00-02:00, at 01:00 inside, at 03:00 the evening
        ({"change_window_start": time(22), "change_window_end": time(2)}, "2026-12-01 01:00", "2026-12-01 01:00"),
        ({"change_window_start": time(22), "change_window_end": time(2)}, "2026-12-01 03:00", "2026-12-01 22:00"),
        # blackout dates are skipped, today included
        (
            {
                "change_window_start": time(9),
                "change_window_end": time(17),
                "blackout_dates": ["2026-12-01", "2026-12-02"],
            },
            "2026-12-01 10:00",
            "2026-12-03 09:00",
        ),
        # days only: midnight of the next allowed day
        ({"change_window_days": [6]}, "2026-12-01 10:00", "2026-12-06 00:00"),
        # a start inside the spring-forward gap (02:30 does not exist on 2026-03-29 in Berlin)
        ({"change_window_start": time(2, 30), "change_window_end": time(4)}, "2026-03-29 01:00", "2026-03-29 03:30"),
    ],
)
def test_the_next_change_window(fields, after, expected):
    found = next_change_window(policy(**fields), after=at(after), time_zone="Europe/Berlin")
    assert found.astimezone(BERLIN).replace(tzinfo=None) == datetime.fromisoformat(expected)


def test_a_window_that_never_opens_waits_for_execute():
    never = policy(change_window_days=[0], blackout_dates=[f"2026-12-{d:02d}" for d in range(1, 32)])
    assert next_change_window(never, after=at("2026-12-01 10:00"), time_zone="Europe/Berlin") is not None
    every_monday = [(at("2026-12-07 00:00") + timedelta(days=7 * week)).date().isoformat() for week in range(0, 60)]
    never.blackout_dates = every_monday
    assert next_change_window(never, after=at("2026-12-01 10:00"), time_zone="Europe/Berlin") is None
