"""The action state machine and the lifecycle services that need no platform."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, TransitionNotAllowed

from actions.models import Action, ActionExecutionLog, ActionStatus, LogEvent
from actions.services.lifecycle import action_approve, action_cancel, action_reject, actions_apply_bulk
from budgetradar.errors import Conflict, InvalidState, NotFound, PermissionDenied
from tests.factories import ActionFactory

S = ActionStatus
NOW = timezone.now()
ERR = {"code": "x", "message": "m", "retryable": False, "hint": "h"}
ROLLBACK = {"by": None, "reason": "", "override_drift": False, "at": NOW}

ALLOWED = [
    (S.PENDING_APPROVAL, "approve", {"by": None, "at": NOW}, S.APPROVED),
    (S.PENDING_APPROVAL, "reject", {"reason": "no", "at": NOW}, S.REJECTED),
    (S.PENDING_APPROVAL, "cancel", {"reason": "", "at": NOW}, S.CANCELLED),
    (S.APPROVED, "enqueue", {"job": None, "at": NOW}, S.QUEUED),
    (S.APPROVED, "cancel", {"reason": "", "at": NOW}, S.CANCELLED),
    (S.QUEUED, "start", {"at": NOW, "lease_owner": "worker:test", "lease_expires_at": NOW}, S.EXECUTING),
    (S.QUEUED, "cancel", {"reason": "", "at": NOW}, S.CANCELLED),
    (S.EXECUTING, "succeed", {"at": NOW, "after_state": {}}, S.SUCCEEDED),
    (S.EXECUTING, "fail", {"error": ERR, "at": NOW}, S.FAILED),
    (
        S.EXECUTING,
        "partially_execute",
        {"error": ERR, "at": NOW, "after_state": {}, "rollback_params": None, "rollback_deadline": None},
        S.PARTIALLY_EXECUTED,
    ),
    (S.EXECUTING, "release", {"reason": "worker died", "next_attempt_at": NOW}, S.APPROVED),
    (S.SUCCEEDED, "start_rollback", ROLLBACK, S.ROLLING_BACK),
    (S.PARTIALLY_EXECUTED, "start_rollback", ROLLBACK, S.ROLLING_BACK),
    (S.ROLLBACK_FAILED, "start_rollback", ROLLBACK, S.ROLLING_BACK),
    (S.ROLLING_BACK, "finish_rollback", {"at": NOW}, S.ROLLED_BACK),
    (S.ROLLING_BACK, "fail_rollback", {"error": ERR}, S.ROLLBACK_FAILED),
    (S.FAILED, "approve", {"by": None, "at": NOW}, S.APPROVED),
]
TRANSITIONS = {name: kwargs for _, name, kwargs, _ in ALLOWED}
ALLOWED_PAIRS = {(source, name) for source, name, _, _ in ALLOWED}
FORBIDDEN = [(state, name) for state in S for name in TRANSITIONS if (state, name) not in ALLOWED_PAIRS]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("source", "name", "kwargs", "target"), ALLOWED, ids=lambda v: "kwargs" if isinstance(v, dict) else str(v)
)  # ids without the time in them: the same on every pytest-xdist worker
def test_every_allowed_transition_reaches_its_target(source, name, kwargs, target):
    action = ActionFactory(status=source)
    getattr(action, name)(**kwargs)
    action.save()
    assert Action.objects.get(pk=action.pk).status == target


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "name"), FORBIDDEN, ids=lambda v: str(v))
def test_every_other_transition_is_refused(source, name):
    action = ActionFactory(status=source)
    with pytest.raises(TransitionNotAllowed):
        getattr(action, name)(**TRANSITIONS[name])


def test_status_cannot_be_assigned_directly(db):
    action = ActionFactory()
    with pytest.raises(AttributeError):
        action.status = S.SUCCEEDED


def test_rejecting_a_succeeded_action_is_refused_with_a_clear_error(approver, campaign):
    action = ActionFactory(entity=campaign, status=S.SUCCEEDED)
    with pytest.raises(InvalidState) as refused:
        action_reject(action=action, actor=approver, reason="too late")
    assert refused.value.http_status == 409
    assert refused.value.message == f"Action #{action.pk} has already succeeded and cannot be rejected."


def test_an_approver_can_approve_and_history_records_who_and_why(approver, campaign):
    action = ActionFactory(entity=campaign)
    action_approve(action=action, actor=approver, reason="looks right")
    action.refresh_from_db()
    assert action.status == S.APPROVED
    assert action.approved_by == approver
    latest = action.history.first()
    assert latest.history_user == approver
    assert latest.history_change_reason == "looks right"
    assert ActionExecutionLog.objects.filter(action=action, event=LogEvent.APPROVED, actor=approver.username).exists()


def test_approval_records_the_baseline_the_approver_saw(approver, campaign):
    action = ActionFactory(entity=campaign)
    action_approve(action=action, actor=approver)
    action.refresh_from_db()
    assert action.baseline_state["daily_budget"] == str(campaign.daily_budget)
    assert action.baseline_state["status"] == "active"


@pytest.mark.parametrize("role_fixture", ["viewer", "operator"])
def test_roles_below_approver_cannot_approve(request, role_fixture, campaign):
    user = request.getfixturevalue(role_fixture)
    action = ActionFactory(entity=campaign)
    with pytest.raises(PermissionDenied, match="does not allow you to approve"):
        action_approve(action=action, actor=user)
    action.refresh_from_db()
    assert action.status == S.PENDING_APPROVAL


def test_four_eyes_forbids_approving_your_own_proposal(tenant, approver, second_approver, campaign):
    tenant.four_eyes_required = True
    tenant.save()
    action = ActionFactory(entity=campaign, proposed_by=approver)
    with pytest.raises(PermissionDenied, match="Four-eyes"):
        action_approve(action=action, actor=approver)
    action_approve(action=action, actor=second_approver)
    assert action.status == S.APPROVED


def test_without_four_eyes_the_proposer_may_approve(approver, campaign):
    action = ActionFactory(entity=campaign, proposed_by=approver)
    action_approve(action=action, actor=approver)
    assert action.status == S.APPROVED


def test_approving_twice_is_refused_as_already_approved(approver, campaign):
    action = ActionFactory(entity=campaign)
    action_approve(action=action, actor=approver)
    with pytest.raises(InvalidState) as refused:
        action_approve(action=action, actor=approver)
    assert refused.value.code == "already_approved"


def test_a_failed_action_can_only_run_again_through_explicit_reapproval(approver, campaign):
    action = ActionFactory(entity=campaign, status=S.FAILED)
    action_approve(action=action, actor=approver, reason="token renewed")
    assert action.status == S.APPROVED


def test_reject_requires_a_reason(approver, campaign):
    action = ActionFactory(entity=campaign)
    with pytest.raises(Exception, match="reason is required"):
        action_reject(action=action, actor=approver, reason="  ")


def test_operator_can_cancel_a_queued_action_but_not_an_executing_one(operator, campaign, connection_):
    queued = ActionFactory(entity=campaign, status=S.QUEUED)
    action_cancel(action=queued, actor=operator, reason="plan changed")
    assert queued.status == S.CANCELLED
    executing = ActionFactory(entity=campaign, status=S.EXECUTING)
    with pytest.raises(InvalidState, match=f"^Action #{executing.pk} is executing and cannot be cancelled.$"):
        action_cancel(action=executing, actor=operator)


def test_another_tenants_action_is_not_found(other_admin, campaign):
    action = ActionFactory(entity=campaign)
    for service, kwargs in [(action_approve, {}), (action_reject, {"reason": "x"}), (action_cancel, {})]:
        with pytest.raises(NotFound):
            service(action=action, actor=other_admin, **kwargs)


def test_a_stale_copy_cannot_overwrite_a_concurrent_transition(approver, campaign):
    action = ActionFactory(entity=campaign)
    stale_copy = Action.objects.get(pk=action.pk)
    action_cancel(action=action, actor=approver)
    with pytest.raises(Conflict, match="changed by someone else"):
        action_approve(action=stale_copy, actor=approver)
    assert Action.objects.get(pk=action.pk).status == S.CANCELLED


def test_a_stale_instance_cannot_save_a_transition_over_a_concurrent_one(campaign):
    # Action names its state fields once (django-fsm-2 would test every field per
    # instance); the mixin's optimistic lock on them must hold as before.
    assert Action().state_fields == (Action._meta.get_field("status"),)
    action = ActionFactory(entity=campaign)
    stale_copy = Action.objects.get(pk=action.pk)
    action.cancel(reason="", at=NOW)
    action.save()
    stale_copy.approve(by=None, at=NOW)
    with pytest.raises(ConcurrentTransition), transaction.atomic():
        stale_copy.save()
    assert Action.objects.get(pk=action.pk).status == S.CANCELLED


def test_bulk_approve_reports_done_and_skipped_with_reasons(approver, campaign):
    pending = ActionFactory(entity=campaign)
    done = ActionFactory(entity=campaign, status=S.SUCCEEDED)
    results = actions_apply_bulk(actions=[pending, done], actor=approver, operation=action_approve)
    assert [(r.action.pk, r.done) for r in results] == [(pending.pk, True), (done.pk, False)]
    assert results[1].reason == f"Action #{done.pk} has already succeeded and cannot be approved."
