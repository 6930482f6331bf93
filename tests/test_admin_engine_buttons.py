"""Execute now, Roll back and Reset circuit breaker in the admin: offered only when the
state allows and the role grants them, confirmed on a page that says what will happen,
and carried out by the same services and workers as the API."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from actions.models import Action, ActionStatus
from platforms.models import CircuitState, PlatformConnection
from tests import factories
from tests.engine_helpers import approved, run_worker, sandbox_world


def url(model, view: str = "changelist", *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def executed(campaign, **extra) -> Action:
    """A succeeded budget change 100.00 -> 150.00 with rollback instructions (no platform call)."""
    defaults = {
        "status": ActionStatus.SUCCEEDED,
        "params": {"new_budget": "150.00", "budget_type": "daily"},
        "before_state": {"status": "active", "daily_budget": "100.00"},
        "after_state": {"status": "active", "daily_budget": "150.00"},
        "rollback_params": {"changes": [{"field": "daily_budget", "value": "100.00"}]},
        "rollback_deadline": timezone.now() + timedelta(hours=20),
        "finished_at": timezone.now(),
    }
    return factories.ActionFactory(entity=campaign, **{**defaults, **extra})


def open_circuit(connection: PlatformConnection, reason: str = "auth_expired: the token was revoked") -> None:
    PlatformConnection.objects.filter(pk=connection.pk).update(
        circuit_state=CircuitState.OPEN, consecutive_failures=3, circuit_opened_at=timezone.now(), circuit_reason=reason
    )


def confirm_url_of(client, operation: str, action: Action) -> str:
    response = client.get(url(Action, operation, action.pk))
    assert response.status_code == 302, response.status_code
    return response["Location"]


# Which buttons appear -----------------------------------------------------------------------


def test_execute_now_is_offered_to_approvers_on_approved_actions_only(client, approver, operator, campaign):
    ready = factories.ActionFactory(entity=campaign, status=ActionStatus.APPROVED)
    pending = factories.ActionFactory(entity=campaign)
    client.force_login(approver)
    assert url(Action, "execute", ready.pk) in client.get(url(Action, "change", ready.pk)).content.decode()
    assert url(Action, "execute", pending.pk) not in client.get(url(Action, "change", pending.pk)).content.decode()
    assert "execute_selected" in client.get(url(Action)).content.decode()

    client.force_login(operator)
    assert url(Action, "execute", ready.pk) not in client.get(url(Action, "change", ready.pk)).content.decode()
    assert "execute_selected" not in client.get(url(Action)).content.decode()
    assert client.get(url(Action, "execute", ready.pk)).status_code == 403


def test_roll_back_is_offered_to_approvers_on_executed_actions_only(client, approver, viewer, campaign):
    done = executed(campaign)
    ready = factories.ActionFactory(entity=campaign, status=ActionStatus.APPROVED)
    client.force_login(approver)
    assert url(Action, "rollback", done.pk) in client.get(url(Action, "change", done.pk)).content.decode()
    assert url(Action, "rollback", ready.pk) not in client.get(url(Action, "change", ready.pk)).content.decode()

    client.force_login(viewer)
    assert url(Action, "rollback", done.pk) not in client.get(url(Action, "change", done.pk)).content.decode()
    assert client.get(url(Action, "rollback", done.pk)).status_code == 403


def test_the_action_page_shows_before_and_after_the_deadline_and_the_error(client, approver, campaign):
    failed = executed(
        campaign,
        status=ActionStatus.PARTIALLY_EXECUTED,
        error_code="invalid_value",
        error_message="The budget is below the platform minimum of 1.00 EUR.",
        error_retryable=False,
        error_hint="Check the platform's limits and propose a new value.",
    )
    client.force_login(approver)
    page = client.get(url(Action, "change", failed.pk)).content.decode()
    assert "Daily budget:</strong> 100.00 EUR → 150.00 EUR" in page
    assert "Rollback:</label>" in page and "(in 19 hours)" in page
    assert "Value refused by the platform" in page and "invalid_value" not in page
    assert "below the platform minimum of 1.00 EUR" in page
    assert "propose a new value" in page


# Execute now -------------------------------------------------------------------------------


def test_execute_confirmation_says_what_will_happen_and_changes_nothing(client, approver, campaign):
    action = factories.ActionFactory(
        entity=campaign, status=ActionStatus.APPROVED, baseline_state={"status": "active", "daily_budget": "100.00"}
    )
    client.force_login(approver)
    page = client.get(confirm_url_of(client, "execute", action)).content.decode()
    assert "EU Search - Brand" in page
    assert "Daily budget: 100.00 EUR → 120.00 EUR" in page
    assert "Will be queued for execution" in page
    assert "marked stale and nothing is sent" in page
    assert 'name="reason"' not in page  # the service takes no reason
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED


def test_execute_is_refused_with_the_circuit_reason_while_it_is_open(client, approver, campaign):
    action = factories.ActionFactory(entity=campaign, status=ActionStatus.APPROVED)
    open_circuit(campaign.connection)
    client.force_login(approver)
    page = client.get(confirm_url_of(client, "execute", action)).content.decode()
    assert "Skipped" in page and "auth_expired: the token was revoked" in page
    assert "Nothing to execute now" in page


@pytest.mark.django_db(transaction=True)
def test_execute_now_then_the_worker_shows_succeeded_on_the_page(client):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, "approver", "acme-approver")
    world = sandbox_world(tenant)
    action = approved(world.entity("sandbox-cmp-1"), approver)
    client.force_login(approver)

    confirm = confirm_url_of(client, "execute", action)
    response = client.post(confirm, {}, follow=True)
    assert f"Action #{action.pk} was queued for execution." in response.content.decode()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.QUEUED
    client.post(confirm, {})  # a second submit of the same confirmation does nothing more

    run_worker()
    page = client.get(url(Action, "change", action.pk)).content.decode()
    assert "Succeeded" in page
    assert "Daily budget:</strong> 100.00 EUR → 150.00 EUR" in page
    assert url(Action, "rollback", action.pk) in page
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    assert world.applied_count("sandbox-cmp-1") == 1


@pytest.mark.django_db(transaction=True)
def test_bulk_execute_queues_the_approved_and_skips_the_rest(client):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, "approver", "acme-approver")
    world = sandbox_world(tenant)
    first = approved(world.entity("sandbox-cmp-1"), approver)
    second = approved(world.entity("sandbox-cmp-2"), approver, new_budget="80.00")
    pending = factories.ActionFactory(entity=world.entity("sandbox-adset-1-1"))
    client.force_login(approver)

    response = client.post(
        url(Action), {"action": "execute_selected", "_selected_action": [first.pk, second.pk, pending.pk]}
    )
    confirm = response["Location"]
    page = client.get(confirm).content.decode()
    assert page.count("Will be queued for execution") == 2
    assert f"Action #{pending.pk} is waiting for approval; only approved actions can be executed." in page
    result = client.get(client.post(confirm, {})["Location"]).content.decode()
    assert "2 actions queued for execution" in result and "1 action skipped" in result

    run_worker()
    statuses = dict(Action.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "succeeded", second.pk: "succeeded", pending.pk: "pending_approval"}
    assert world.platform("sandbox-cmp-2").daily_budget == Decimal("80.00")


# Roll back ---------------------------------------------------------------------------------


def test_rollback_confirmation_shows_the_change_back_the_deadline_and_drift(client, approver, campaign):
    done = executed(campaign, finished_at=timezone.now() - timedelta(hours=1))
    campaign.synced_at = timezone.now()  # synced after execution, still showing 100.00
    campaign.save()
    client.force_login(approver)
    page = client.get(confirm_url_of(client, "rollback", done)).content.decode()
    # The confirmation read the platform first: it shows 100.00, someone changed it back meanwhile.
    assert "Daily budget: live now 100.00 EUR → will restore 100.00 EUR" in page
    assert "Rollback possible: Until" in page
    assert "Will be queued for rollback" in page
    assert "Drift: the platform (read " in page
    assert "daily budget is 100.00 EUR but BudgetRadar set 150.00 EUR" in page
    assert 'name="override_drift"' not in page  # approvers may not override drift
    assert Action.objects.get(pk=done.pk).status == ActionStatus.SUCCEEDED


def test_an_expired_rollback_is_skipped_with_the_reason(client, approver, campaign):
    done = executed(campaign, rollback_deadline=timezone.now() - timedelta(hours=1))
    client.force_login(approver)
    action_page = client.get(url(Action, "change", done.pk)).content.decode()
    assert "this action can no longer be rolled back" in action_page
    page = client.get(confirm_url_of(client, "rollback", done)).content.decode()
    assert "Skipped" in page and "they are valid for 24 hours after execution" in page


def test_overriding_drift_is_for_admins_and_needs_a_reason(client, tenant_admin, campaign):
    done = executed(campaign)
    client.force_login(tenant_admin)
    confirm = confirm_url_of(client, "rollback", done)
    assert 'name="override_drift"' in client.get(confirm).content.decode()
    response = client.post(confirm, {"override_drift": "on", "reason": " "})
    assert response.status_code == 200
    assert "A reason is required to override the drift check." in response.content.decode()
    assert Action.objects.get(pk=done.pk).status == ActionStatus.SUCCEEDED

    client.post(confirm, {"override_drift": "on", "reason": "Agency changed it by mistake"})
    done.refresh_from_db()
    assert done.status == ActionStatus.ROLLING_BACK
    assert done.rollback_override_drift and done.rollback_reason == "Agency changed it by mistake"
    assert done.rollback_requested_by == tenant_admin


@pytest.mark.django_db(transaction=True)
def test_roll_back_through_the_admin_restores_the_platform_value(client):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, "approver", "acme-approver")
    world = sandbox_world(tenant)
    action = approved(world.entity("sandbox-cmp-1"), approver)
    client.force_login(approver)
    client.post(confirm_url_of(client, "execute", action), {})
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")

    confirm = confirm_url_of(client, "rollback", Action.objects.get(pk=action.pk))
    page = client.get(confirm).content.decode()
    assert "Daily budget: live now 150.00 EUR → will restore 100.00 EUR" in page
    assert "Drift" not in page  # nobody changed it since
    response = client.post(confirm, {"reason": "Spend spike"}, follow=True)
    assert f"Action #{action.pk} was queued for rollback." in response.content.decode()

    run_worker()
    page = client.get(url(Action, "change", action.pk)).content.decode()
    assert "Rolled back" in page and "Spend spike" in page
    assert "Rolled back at " in page and "(in " not in page  # no rollback is offered any more
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")


# Circuit breaker ---------------------------------------------------------------------------


def test_the_connection_page_shows_the_circuit_with_its_reason(client, tenant_admin, connection_):
    open_circuit(connection_)
    client.force_login(tenant_admin)
    page = client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    assert "br-badge-red" in page and "auth_expired: the token was revoked" in page
    assert "Reset circuit breaker" in page
    assert "auth_expired: the token was revoked" in client.get(url(PlatformConnection)).content.decode()


def test_reset_circuit_is_for_admins_and_only_when_it_counted_failures(client, tenant_admin, approver, connection_):
    client.force_login(tenant_admin)
    assert "Reset circuit breaker" not in client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    open_circuit(connection_)
    client.force_login(approver)
    assert "Reset circuit breaker" not in client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    assert client.get(url(PlatformConnection, "reset_circuit", connection_.pk)).status_code == 403
    assert client.post(url(PlatformConnection, "reset_circuit", connection_.pk), {"reason": "x"}).status_code == 403
    assert PlatformConnection.objects.get(pk=connection_.pk).circuit_state == CircuitState.OPEN


def test_reset_circuit_asks_for_a_reason_and_closes_the_circuit(client, tenant_admin, connection_):
    open_circuit(connection_)
    client.force_login(tenant_admin)
    reset_url = url(PlatformConnection, "reset_circuit", connection_.pk)
    page = client.get(reset_url).content.decode()
    assert "auth_expired: the token was revoked" in page and "Yes, reset the circuit breaker" in page
    assert "This field is required" in client.post(reset_url, {"reason": ""}).content.decode()
    assert PlatformConnection.objects.get(pk=connection_.pk).circuit_state == CircuitState.OPEN

    response = client.post(reset_url, {"reason": "Token renewed"}, follow=True)
    assert "is closed again" in response.content.decode()
    connection_.refresh_from_db()
    assert connection_.circuit_state == CircuitState.CLOSED and connection_.consecutive_failures == 0
    latest = connection_.history.latest()
    assert latest.history_user == tenant_admin and latest.history_change_reason == "circuit reset: Token renewed"


def test_another_tenants_connection_cannot_be_reset(client, tenant_admin, other_tenant):
    theirs = factories.ConnectionFactory(tenant=other_tenant)
    open_circuit(theirs)
    client.force_login(tenant_admin)
    assert client.get(url(PlatformConnection, "reset_circuit", theirs.pk)).status_code == 404
    assert client.post(url(PlatformConnection, "reset_circuit", theirs.pk), {"reason": "x"}).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_after_a_reset_the_admin_can_execute_again(client):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    admin_user = factories.member(tenant, "admin", "acme-admin")
    world = sandbox_world(tenant)
    action = approved(world.entity("sandbox-cmp-1"), admin_user)
    open_circuit(world.connection)
    client.force_login(admin_user)
    assert "Nothing to execute now" in client.get(confirm_url_of(client, "execute", action)).content.decode()

    client.post(url(PlatformConnection, "reset_circuit", world.connection.pk), {"reason": "Fixed the token"})
    client.post(confirm_url_of(client, "execute", action), {})
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
