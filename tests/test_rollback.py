"""Rolling executed actions back: restores the before-state, refuses what it must not overwrite."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.rollback import action_rollback_request
from budgetradar.errors import InvalidState, PermissionDenied
from platforms.sandbox.models import SandboxEntity
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


@pytest.fixture
def executed(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    return action


def test_rollback_restores_the_before_state_and_verifies_it(world, executed, approver):
    action_rollback_request(action=executed, actor=approver, reason="CPA went up")
    run_worker()
    executed.refresh_from_db()
    assert executed.status == ActionStatus.ROLLED_BACK
    assert executed.rolled_back_at is not None
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert executed.after_state["daily_budget"] == "150.00"  # the execution's after-state is kept
    events = list(executed.logs.values_list("event", flat=True))
    assert events[-4:] == ["rollback_started", "request_sent", "response_received", "rollback_succeeded"]


def test_rollback_is_refused_after_24_hours(executed, approver):
    Action.objects.filter(pk=executed.pk).update(rollback_deadline=timezone.now() - timedelta(minutes=1))
    executed.refresh_from_db()
    with pytest.raises(InvalidState, match="valid for 24 hours") as refused:
        action_rollback_request(action=executed, actor=approver)
    assert refused.value.code == "rollback_expired"


def test_rollback_is_refused_when_someone_changed_the_entity_since(world, executed, approver):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(daily_budget=Decimal("175.00"))
    action_rollback_request(action=executed, actor=approver)
    run_worker()
    executed.refresh_from_db()
    assert executed.status == ActionStatus.ROLLBACK_FAILED
    assert executed.error_code == "drifted"
    assert "daily_budget is 175.00, BudgetRadar set 150.00" in executed.error_message
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("175.00")


def test_an_admin_may_override_drift_with_a_reason(world, executed, approver, tenant_admin):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(daily_budget=Decimal("175.00"))
    action_rollback_request(action=executed, actor=approver)
    run_worker()
    executed.refresh_from_db()
    with pytest.raises(PermissionDenied):
        action_rollback_request(action=executed, actor=approver, reason="x", override_drift=True)
    action_rollback_request(action=executed, actor=tenant_admin, reason="the 175 was a typo", override_drift=True)
    run_worker()
    executed.refresh_from_db()
    assert executed.status == ActionStatus.ROLLED_BACK
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")


def test_an_entity_removed_on_the_platform_cannot_be_rolled_back(world, executed, approver):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(deleted_at=timezone.now())
    action_rollback_request(action=executed, actor=approver)
    run_worker()
    executed.refresh_from_db()
    assert executed.status == ActionStatus.ROLLBACK_FAILED
    assert executed.error_code == "not_found"
    assert "removed on the platform; a removed entity cannot be rolled back" in executed.error_message


def test_only_executed_actions_can_be_rolled_back(world, approver):
    pending = approved(world.entity("sandbox-cmp-2"), approver)
    refused = f"^Action #{pending.pk} is already approved; only succeeded or partially executed actions can be"
    with pytest.raises(InvalidState, match=refused):
        action_rollback_request(action=pending, actor=approver)


def test_viewer_cannot_roll_back(executed, viewer):
    with pytest.raises(PermissionDenied):
        action_rollback_request(action=executed, actor=viewer)


def test_requesting_a_rollback_twice_rolls_back_once(world, executed, approver):
    action_rollback_request(action=executed, actor=approver)
    action_rollback_request(action=Action.objects.get(pk=executed.pk), actor=approver)
    run_worker()
    assert world.applied_count("sandbox-cmp-1") == 2  # the execution and one rollback
